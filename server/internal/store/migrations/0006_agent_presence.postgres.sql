-- 0006: announce changes of where agents are connected and of the routes
-- they serve (DESIGN.md §10a), so that every replica's presence view
-- follows them within a second. Each change of an agent_connections row
-- (a connection recorded or removed, a replica's rows replaced or swept
-- by the cascade) and each write of an agent's routes, name or deletion
-- notifies the channel outpost_agent_presence with the agent id as the
-- payload, when its transaction commits. PostgreSQL delivers one
-- notification per distinct payload per transaction.
--
-- SQLite has nothing to notify: its file of this version changes nothing.
CREATE FUNCTION outpost_notify_connection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('outpost_agent_presence', OLD.agent_id);
    ELSE
        PERFORM pg_notify('outpost_agent_presence', NEW.agent_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_connections_notify
    AFTER INSERT OR UPDATE OR DELETE ON agent_connections
    FOR EACH ROW EXECUTE FUNCTION outpost_notify_connection();

CREATE FUNCTION outpost_notify_agent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outpost_agent_presence', NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_notify
    AFTER UPDATE OF name, deleted_at, approved_routes, last_routes ON agents
    FOR EACH ROW EXECUTE FUNCTION outpost_notify_agent();
