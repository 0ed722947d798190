package io.warmstart.example;

import com.zaxxer.hikari.HikariDataSource;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

/**
 * A product catalogue as Spring services are written: web + JSON, a HikariCP pool on an embedded H2 database loaded
 * at start (PRODUCTS rows, default 100000), an in-memory index built from it. GET /healthz answers once it is all
 * loaded; GET /stats shows a boot token (what a restore keeps), the request count and the pool's state.
 */
@SpringBootApplication
@RestController
public class CatalogApplication {
    private static final String BOOT_TOKEN = HexFormat.of().formatHex(new SecureRandom().generateSeed(8));
    private final JdbcTemplate jdbc;
    private final HikariDataSource pool;
    private final AtomicLong requests = new AtomicLong();
    private final Map<String, List<Long>> index = new ConcurrentHashMap<>();
    private volatile boolean ready;

    public CatalogApplication(JdbcTemplate jdbc, HikariDataSource pool) {
        this.jdbc = jdbc;
        this.pool = pool;
        CracEvents.INSTANCE.pool = pool;
    }

    public static void main(String[] args) {
        // Registered before Spring's own CRaC resource: notified last before a checkpoint (once Spring has stopped
        // the web server and emptied the pool) and first after a restore (before Spring restarts them).
        org.crac.Core.getGlobalContext().register(CracEvents.INSTANCE);
        SpringApplication.run(CatalogApplication.class, args);
    }

    /** What the CRaC API did to this JVM: calls seen, and the pool's connections at the checkpoint. */
    static final class CracEvents implements org.crac.Resource {
        static final CracEvents INSTANCE = new CracEvents();
        final AtomicLong before = new AtomicLong();
        final AtomicLong after = new AtomicLong();
        volatile int poolAtCheckpoint = -1;
        volatile HikariDataSource pool;

        @Override
        public void beforeCheckpoint(org.crac.Context<? extends org.crac.Resource> context) {
            before.incrementAndGet();
            if (pool != null) {
                poolAtCheckpoint = pool.getHikariPoolMXBean().getTotalConnections();
            }
        }

        @Override
        public void afterRestore(org.crac.Context<? extends org.crac.Resource> context) {
            after.incrementAndGet();
        }
    }

    @EventListener(ApplicationReadyEvent.class)
    public void load() {
        int n = Integer.parseInt(System.getenv().getOrDefault("PRODUCTS", "100000"));
        String[] words = {"oak", "steel", "eco", "lamp", "desk", "chair", "linen", "glass", "stone", "wool"};
        jdbc.execute("CREATE TABLE product (id BIGINT PRIMARY KEY, name VARCHAR(80), price DECIMAL(10,2))");
        jdbc.batchUpdate("INSERT INTO product VALUES (?, ?, ?)", new org.springframework.jdbc.core.BatchPreparedStatementSetter() {
            public void setValues(java.sql.PreparedStatement ps, int i) throws java.sql.SQLException {
                ps.setLong(1, i);
                ps.setString(2, words[i % words.length] + " " + words[(i / 10) % words.length] + " " + i);
                ps.setBigDecimal(3, java.math.BigDecimal.valueOf(5 + (i % 995), 0));
            }
            public int getBatchSize() { return n; }
        });
        jdbc.query("SELECT id, name FROM product", rs -> {
            for (String w : rs.getString(2).split(" ")) {
                index.computeIfAbsent(w, k -> new java.util.concurrent.CopyOnWriteArrayList<>()).add(rs.getLong(1));
            }
        });
        ready = true;
        System.out.println("catalog ready: " + n + " products, token=" + BOOT_TOKEN);
    }

    @GetMapping("/healthz")
    public org.springframework.http.ResponseEntity<Map<String, Object>> healthz() {
        requests.incrementAndGet();
        return org.springframework.http.ResponseEntity.status(ready ? 200 : 503).body(Map.of("ready", ready));
    }

    @GetMapping("/products/{id}")
    public Map<String, Object> product(@PathVariable long id) {
        requests.incrementAndGet();
        return jdbc.queryForMap("SELECT id, name, price FROM product WHERE id = ?", id);
    }

    @GetMapping("/search")
    public Map<String, Object> search(@RequestParam String q) {
        requests.incrementAndGet();
        List<Long> ids = index.getOrDefault(q, List.of());
        return Map.of("q", q, "hits", ids.size(), "first", ids.subList(0, Math.min(5, ids.size())));
    }

    @GetMapping("/stats")
    public Map<String, Object> stats() {
        CracEvents crac = CracEvents.INSTANCE;
        return Map.of("boot_token", BOOT_TOKEN, "count", requests.incrementAndGet(), "products", index.size(),
                "pool", Map.of("active", pool.getHikariPoolMXBean().getActiveConnections(),
                        "idle", pool.getHikariPoolMXBean().getIdleConnections(),
                        "total", pool.getHikariPoolMXBean().getTotalConnections()),
                "crac", Map.of("before", crac.before.get(), "after", crac.after.get(),
                        "pool_total_at_checkpoint", crac.poolAtCheckpoint));
    }
}
