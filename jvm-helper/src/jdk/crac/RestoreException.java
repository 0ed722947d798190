package jdk.crac;

/** Some resources failed their afterRestore; their exceptions are suppressed in this one. */
public class RestoreException extends Exception {
    private static final long serialVersionUID = 1L;

    public RestoreException() {
    }
}
