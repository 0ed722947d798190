package io.warmstart.crac;

import java.util.ArrayList;
import java.util.List;
import jdk.crac.CheckpointException;
import jdk.crac.Context;
import jdk.crac.Resource;
import jdk.crac.RestoreException;

/**
 * The global context, ordered as the JDK's: beforeCheckpoint in reverse order of registration (what was set up
 * last is torn down first), afterRestore in order of registration. Every resource is called even when one fails;
 * the failures are suppressed in the one exception thrown. Resources are held strongly (the JDK holds them weakly):
 * org.crac registers a wrapper the app never references, which a weak reference would lose at the next GC.
 */
public final class GlobalContext extends Context<Resource> {
    public static final GlobalContext INSTANCE = new GlobalContext();

    private final List<Resource> resources = new ArrayList<>();

    private GlobalContext() {
    }

    @Override
    public synchronized void register(Resource resource) {
        resources.add(resource);
    }

    synchronized int size() {
        return resources.size();
    }

    private synchronized List<Resource> registered() {
        return new ArrayList<>(resources);
    }

    @Override
    public void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException {
        List<Resource> all = registered();
        CheckpointException failure = null;
        for (int i = all.size() - 1; i >= 0; i--) {
            try {
                all.get(i).beforeCheckpoint(this);
            } catch (Exception e) {
                if (failure == null) {
                    failure = new CheckpointException();
                }
                failure.addSuppressed(e);
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    @Override
    public void afterRestore(Context<? extends Resource> context) throws RestoreException {
        RestoreException failure = null;
        for (Resource r : registered()) {
            try {
                r.afterRestore(this);
            } catch (Exception e) {
                if (failure == null) {
                    failure = new RestoreException();
                }
                failure.addSuppressed(e);
            }
        }
        if (failure != null) {
            throw failure;
        }
    }
}
