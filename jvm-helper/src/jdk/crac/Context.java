package jdk.crac;

/** A group of resources notified together (JDK's jdk.crac.Context). */
public abstract class Context<R extends Resource> implements Resource {
    protected Context() {
    }

    public abstract void register(R resource);
}
