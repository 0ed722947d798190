package jdk.crac;

/** Entry point of the CRaC API (JDK's jdk.crac.Core): the global context resources register with. */
public final class Core {
    private Core() {
    }

    public static Context<Resource> getGlobalContext() {
        return io.warmstart.crac.GlobalContext.INSTANCE;
    }

    /** warmstart checkpoints from outside the process (`warmstart build`): an app cannot ask for one. */
    public static void checkpointRestore() throws CheckpointException, RestoreException {
        throw new UnsupportedOperationException(
                "warmstart takes checkpoints from outside the JVM (warmstart build): in-process requests are not supported");
    }
}
