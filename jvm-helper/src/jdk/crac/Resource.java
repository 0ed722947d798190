package jdk.crac;

/** The CRaC API's resource (JDK's jdk.crac), provided by warmstart's agent on JDKs without CRaC. */
public interface Resource {
    void beforeCheckpoint(Context<? extends Resource> context) throws Exception;

    void afterRestore(Context<? extends Resource> context) throws Exception;
}
