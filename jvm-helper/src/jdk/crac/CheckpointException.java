package jdk.crac;

/** Some resources failed their beforeCheckpoint; their exceptions are suppressed in this one. */
public class CheckpointException extends Exception {
    private static final long serialVersionUID = 1L;

    public CheckpointException() {
    }
}
