-- The journal's fence in one statement per group commit, without a row lock per shard.
--
-- Every writer transaction of node N holds N's fence lock (a transaction-level advisory lock)
-- shared from its fence check to its commit; every change that takes a shard away from N (a
-- claim of one of N's shards, N leaving) holds the same lock exclusively while it bumps the
-- shard's epoch. So a write either commits before the move, or waits for the move to commit
-- and then reads the new epoch. The check runs inside a VOLATILE function, so its query takes a
-- fresh snapshot after the lock is granted (ARCHITECTURE.md, "The fence", has the argument).
-- Advisory locks live in the lock manager only: no heap write, no MultiXact, no WAL.
-- The class 1215261796 is "Hold" in ASCII; the second key is the node id's hash (two nodes that
-- share a hash share a lock: more waiting, never less safety).

-- Takes `node`'s fence lock exclusively: waits for its writers in flight, holds back new ones
-- until this transaction ends. Run before bumping the epoch of a shard `node` owns.
CREATE FUNCTION holdfast_fence_take(node TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1215261796, hashtext(node));
    RETURN TRUE;
END
$$;

-- The fence of one group commit by `writer`: takes its fence lock shared, then returns each
-- (shard, epoch) pair of the comma-separated lists that is no longer `writer`'s current
-- ownership. No rows: every batch may commit.
CREATE FUNCTION holdfast_journal_fence(writer TEXT, fenced_shards TEXT, fenced_epochs TEXT)
RETURNS TABLE (stale_shard BIGINT, stale_epoch BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1215261796, hashtext(writer));
    RETURN QUERY
        SELECT t.shard, t.epoch
        FROM unnest(string_to_array(fenced_shards, ',')::BIGINT[],
                    string_to_array(fenced_epochs, ',')::BIGINT[]) AS t (shard, epoch)
        WHERE NOT EXISTS (
            SELECT 1 FROM cluster_shards s
            WHERE s.shard = t.shard AND s.epoch = t.epoch AND s.owner = writer
        );
END
$$;
