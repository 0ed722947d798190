import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.lang.reflect.Proxy;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A JVM service that speaks the CRaC API by reflection, as frameworks do (no compile-time dependency): it registers
 * one jdk.crac.Resource when the API is there and counts the calls. GET /crac answers
 * {"available", "before", "after"}; GET /random ThreadLocalRandom and Math.random draws (clones must differ);
 * THROW_BEFORE=1 makes beforeCheckpoint throw, as a pool that refuses to close would. Only the JDK's own classes.
 */
public class App {
    static final AtomicInteger BEFORE = new AtomicInteger();
    static final AtomicInteger AFTER = new AtomicInteger();
    static boolean available;

    public static void main(String[] args) throws Exception {
        Thread.sleep(Long.parseLong(System.getenv().getOrDefault("STARTUP_DELAY_MS", "800")));
        registerResource();
        ThreadLocalRandom.current().nextLong(); // seeded once here: the snapshot holds this thread's seed
        Math.random();
        HttpServer server = HttpServer.create(new InetSocketAddress(8080), 64);
        server.createContext("/healthz", ex -> send(ex, "{\"ready\": true}"));
        server.createContext("/crac", ex -> send(ex, "{\"available\": " + available + ", \"before\": " + BEFORE.get()
                + ", \"after\": " + AFTER.get() + "}"));
        server.createContext("/random", ex -> send(ex, "{\"tlr\": " + ThreadLocalRandom.current().nextLong()
                + ", \"math\": " + Math.random() + "}"));
        server.start();
        System.out.println("jvm-resource listening on :8080, CRaC API available: " + available);
    }

    static void registerResource() {
        try {
            Class<?> core = Class.forName("jdk.crac.Core");
            Class<?> resource = Class.forName("jdk.crac.Resource");
            Object context = core.getMethod("getGlobalContext").invoke(null);
            Object probe = Proxy.newProxyInstance(App.class.getClassLoader(), new Class<?>[] {resource},
                    (proxy, method, margs) -> {
                        switch (method.getName()) {
                            case "beforeCheckpoint":
                                beforeCheckpoint();
                                return null;
                            case "afterRestore":
                                AFTER.incrementAndGet();
                                return null;
                            case "toString":
                                return "App.Probe";
                            case "hashCode":
                                return System.identityHashCode(proxy);
                            case "equals":
                                return proxy == margs[0];
                            default:
                                return null;
                        }
                    });
            context.getClass().getMethod("register", resource).invoke(context, probe);
            available = true;
        } catch (ClassNotFoundException e) {
            available = false; // a stock JDK without warmstart's helper: nothing will call us
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    static void beforeCheckpoint() {
        BEFORE.incrementAndGet();
        if ("1".equals(System.getenv("THROW_BEFORE"))) {
            throw new IllegalStateException("connection pool refused to close");
        }
    }

    static void send(HttpExchange ex, String body) throws java.io.IOException {
        byte[] data = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(200, data.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(data);
        }
    }
}
