import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.handler.AbstractHandler;

/**
 * A product-catalogue JSON service on Jetty + Jackson (Debian's packages). At start it builds an in-memory
 * catalogue and a search index (CATALOG_SIZE products), which churns through garbage the way real services do
 * while loading caches; that is the memory a full GC before the checkpoint gives back.
 *
 * GET /healthz, GET /products/{id}, GET /search?q=word, GET /stats (boot token, request count).
 */
public final class Catalog extends AbstractHandler {
    private static final String BOOT_TOKEN = HexFormat.of().formatHex(new SecureRandom().generateSeed(8));
    private static final ObjectMapper JSON = new ObjectMapper().disable(SerializationFeature.FAIL_ON_EMPTY_BEANS);
    private static final String[] WORDS = {"red", "blue", "green", "steel", "oak", "linen", "wool", "glass",
        "compact", "large", "smart", "classic", "eco", "pro", "mini", "ultra"};

    record Product(long id, String name, String category, double price, List<String> tags) {}

    private final Map<Long, Product> products = new HashMap<>();
    private final Map<String, List<Long>> index = new HashMap<>();
    private final AtomicLong requests = new AtomicLong();
    private volatile boolean ready;

    void load(int size) {
        Random random = new Random(42);
        for (long id = 0; id < size; id++) {
            List<String> tags = new ArrayList<>();
            for (int t = 0; t < 3; t++) {
                tags.add(WORDS[random.nextInt(WORDS.length)]);
            }
            String name = String.join(" ", tags) + " item " + id;
            // Like parsing a feed: build throwaway JSON per item, then keep only the parsed product.
            String raw = "{\"id\":" + id + ",\"name\":\"" + name + "\",\"price\":" + random.nextInt(100000) / 100.0 + "}";
            try {
                Map<?, ?> parsed = JSON.readValue(raw, Map.class);
                Product p = new Product(id, (String) parsed.get("name"), WORDS[(int) (id % WORDS.length)],
                        ((Number) parsed.get("price")).doubleValue(), List.copyOf(tags));
                products.put(id, p);
                for (String tag : tags) {
                    index.computeIfAbsent(tag, k -> new ArrayList<>()).add(id);
                }
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
        ready = true;
    }

    @Override
    public void handle(String target, Request base, HttpServletRequest req, HttpServletResponse resp)
            throws IOException {
        long count = requests.incrementAndGet();
        base.setHandled(true);
        resp.setContentType("application/json");
        Object body;
        if (target.equals("/healthz")) {
            resp.setStatus(ready ? 200 : 503);
            body = Map.of("ready", ready);
        } else if (target.equals("/stats")) {
            body = Map.of("boot_token", BOOT_TOKEN, "count", count, "products", products.size(),
                    "heap_used_mb", (Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory()) >> 20);
        } else if (target.startsWith("/products/")) {
            Product p = products.get(Long.parseLong(target.substring("/products/".length())));
            resp.setStatus(p == null ? 404 : 200);
            body = p == null ? Map.of("error", "not found") : p;
        } else if (target.equals("/search")) {
            String q = req.getParameter("q") == null ? "" : req.getParameter("q");
            List<Long> ids = index.getOrDefault(q, List.of());
            List<Product> hits = new ArrayList<>();
            for (int i = 0; i < Math.min(20, ids.size()); i++) {
                hits.add(products.get(ids.get(i)));
            }
            Map<String, Object> result = new LinkedHashMap<>();
            result.put("q", q);
            result.put("total", ids.size());
            result.put("hits", hits);
            body = result;
        } else {
            resp.setStatus(404);
            body = Map.of("error", "no route " + target);
        }
        JSON.writeValue(resp.getOutputStream(), body);
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        int size = Integer.parseInt(System.getenv().getOrDefault("CATALOG_SIZE", "400000"));
        Catalog catalog = new Catalog();
        Server server = new Server(port);
        server.setHandler(catalog);
        server.start();  // /healthz answers 503 until the catalogue is loaded
        long start = System.nanoTime();
        catalog.load(size);
        System.out.printf("catalog ready: %d products in %d ms, token=%s%n", size,
                (System.nanoTime() - start) / 1_000_000, BOOT_TOKEN);
        server.join();
    }
}
