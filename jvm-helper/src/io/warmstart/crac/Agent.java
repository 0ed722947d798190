package io.warmstart.crac;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.lang.instrument.Instrumentation;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * warmstart's JVM helper: a java agent (loaded with -javaagent, mounted read-only like CRIU, never baked into the
 * image) that provides the CRaC API as jdk.crac on a stock JDK, so org.crac users (Spring, Micronaut, Quarkus)
 * get their beforeCheckpoint before warmstart's snapshot and their afterRestore after each restore.
 *
 * <p>Triggers come over TCP on 127.0.0.1:PORT inside the container (PORT from the agent argument port=N): one
 * line, "beforeCheckpoint" or "afterRestore", answered by "ok" or "error: ..." on one line. warmstart-init sends
 * them: `warmstart-init crac beforeCheckpoint` exec'd before the dump, and the restoring init itself right after
 * CRIU's restore. Before the checkpoint it also runs a full GC (the garbage need not be dumped); after a restore
 * it reseeds what a JVM seeds once, so clones do not share "random" numbers, then calls the resources.
 */
public final class Agent {
    private static final AtomicLong RESTORES = new AtomicLong();

    private Agent() {
    }

    public static void premain(String args, Instrumentation inst) {
        int port = 0;
        for (String part : (args == null ? "" : args).split(",")) {
            if (part.startsWith("port=")) {
                port = Integer.parseInt(part.substring(5));
            }
        }
        if (port <= 0) {
            System.err.println("warmstart-crac: no port=N argument; the agent stays idle");
            return;
        }
        openForReseed(inst);
        ServerSocket server;
        try {
            server = new ServerSocket(port, 4, InetAddress.getLoopbackAddress());
        } catch (Exception e) {
            System.err.println("warmstart-crac: cannot listen on 127.0.0.1:" + port + ": " + e);
            return;
        }
        Thread t = new Thread(() -> serve(server), "warmstart-crac");
        t.setDaemon(true);
        t.start();
    }

    private static void serve(ServerSocket server) {
        while (true) {
            try (Socket conn = server.accept()) {
                BufferedReader in = new BufferedReader(new InputStreamReader(conn.getInputStream(),
                        StandardCharsets.UTF_8));
                String command = String.valueOf(in.readLine()).trim();
                String reply = handle(command);
                OutputStream out = conn.getOutputStream();
                out.write((reply + "\n").getBytes(StandardCharsets.UTF_8));
                out.flush();
            } catch (Exception e) {
                // a client that went away: keep serving
            }
        }
    }

    static String handle(String command) {
        try {
            if (command.equals("beforeCheckpoint")) {
                GlobalContext.INSTANCE.beforeCheckpoint(null);
                System.gc();
                return "ok " + GlobalContext.INSTANCE.size() + " resources";
            }
            if (command.equals("afterRestore")) {
                reseed();
                RESTORES.incrementAndGet();
                GlobalContext.INSTANCE.afterRestore(null);
                return "ok " + GlobalContext.INSTANCE.size() + " resources";
            }
            return "error: unknown command " + command;
        } catch (Exception e) {
            return "error: " + describe(e);
        }
    }

    /** The failing resources, each named by the first frame of its own code, with its message. */
    static String describe(Exception e) {
        StringBuilder out = new StringBuilder();
        Throwable[] causes = e.getSuppressed().length > 0 ? e.getSuppressed() : new Throwable[] {e};
        for (Throwable cause : causes) {
            Throwable t = cause;
            while ((t instanceof InvocationTargetException || t.getClass().getName().endsWith("UndeclaredThrowableException"))
                    && t.getCause() != null) {
                t = t.getCause();
            }
            if (out.length() > 0) {
                out.append("; ");
            }
            out.append(where(t)).append(": ").append(t);
        }
        return out.toString().replace('\n', ' ');
    }

    private static String where(Throwable t) {
        for (StackTraceElement frame : t.getStackTrace()) {
            String c = frame.getClassName();
            if (!c.startsWith("java.") && !c.startsWith("jdk.") && !c.startsWith("sun.") && !c.startsWith("org.crac.")
                    && !c.startsWith("io.warmstart.crac.") && !c.startsWith("com.sun.proxy")) {
                return c + "." + frame.getMethodName();
            }
        }
        return "a resource";
    }

    // -- reseeding ----------------------------------------------------------------------------------------------------

    private static void openForReseed(Instrumentation inst) {
        Module base = Object.class.getModule();
        Module self = Agent.class.getModule();
        try {
            inst.redefineModule(base, Set.of(), Map.of(),
                    Map.of("java.lang", Set.of(self), "java.util.concurrent", Set.of(self)), Set.of(), Map.of());
        } catch (RuntimeException e) {
            System.err.println("warmstart-crac: cannot open java.base for reseeding: " + e);
        }
    }

    /**
     * Clones of one snapshot share every seed taken before it: ThreadLocalRandom's seeder and each thread's seed,
     * Math.random's generator. New seeds come from the kernel (SecureRandom's NativePRNG reads /dev/urandom, which
     * differs per clone). SecureRandom itself needs nothing: NativePRNG mixes fresh /dev/urandom bytes into every
     * output. What cannot be reached: java.util.Random objects the app made before the checkpoint.
     */
    static void reseed() {
        SecureRandom kernel = new SecureRandom();
        try {
            Class<?> tlr = Class.forName("java.util.concurrent.ThreadLocalRandom");
            Field seeder = tlr.getDeclaredField("seeder");
            seeder.setAccessible(true);
            ((AtomicLong) seeder.get(null)).set(kernel.nextLong());
            Field probe = Thread.class.getDeclaredField("threadLocalRandomProbe");
            probe.setAccessible(true);
            for (Thread t : Thread.getAllStackTraces().keySet()) {
                probe.setInt(t, 0); // ThreadLocalRandom.current() re-seeds a thread whose probe is 0
            }
        } catch (ReflectiveOperationException | RuntimeException e) {
            System.err.println("warmstart-crac: ThreadLocalRandom not reseeded: " + e);
        }
        try {
            Class<?> holder = Class.forName("java.lang.Math$RandomNumberGeneratorHolder");
            Field generator = holder.getDeclaredField("randomNumberGenerator");
            generator.setAccessible(true);
            ((Random) generator.get(null)).setSeed(kernel.nextLong());
        } catch (ReflectiveOperationException | RuntimeException e) {
            // Math.random() never called before the checkpoint: nothing to reseed
        }
    }

    /** Restores seen by this JVM (for tests and diagnostics). */
    public static long restores() {
        return RESTORES.get();
    }
}
