-- The user and package links' foreign keys (to messages and to the names) are checked
-- where a link can lose its target -- a message or a name deleted, or its id changed,
-- or a link's ids changed -- and no longer on every link inserted.
-- Why: busgate inserts a link only in the statement that inserts its message, joined to
-- the row that statement inserted (pgstore._ADD, _ADD_BATCH), with a name id read from
-- the names table; the foreign keys checked that again for every link, one index
-- descent and one row lock (FOR KEY SHARE, a WAL record) on the message and on the
-- name: 17-20 ms of a batch of 1,000 messages at a million stored (EXPLAIN ANALYZE:
-- ~2,800 links, four checks each), 10-17% of its server CPU. And two transactions
-- linking the same name at once (a batch written in parts) share its row lock: a
-- MultiXact each time.
-- What stays: deleting a message (or a name) that links still point at fails as
-- before (foreign_key_violation, at the end of the statement: a statement deleting
-- the links and the message together still works), as does changing its id or
-- pointing a link at an id that does not exist by UPDATE. What goes: a link INSERTed
-- by hand with a message or name id that does not exist is not refused.
ALTER TABLE user_messages DROP CONSTRAINT user_messages_message_id_fkey,
    DROP CONSTRAINT user_messages_user_id_fkey;
ALTER TABLE package_messages DROP CONSTRAINT package_messages_message_id_fkey,
    DROP CONSTRAINT package_messages_package_id_fkey;

-- a message deleted (or its id changed) while a link points at it
CREATE FUNCTION history_message_linked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM user_messages WHERE message_id = OLD.id)
       OR EXISTS (SELECT 1 FROM package_messages WHERE message_id = OLD.id) THEN
        RAISE EXCEPTION 'message % is still linked to a user or package', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_linked AFTER DELETE OR UPDATE OF id ON messages
    FOR EACH ROW EXECUTE FUNCTION history_message_linked();

-- a name deleted (or its id changed) while a link points at it
CREATE FUNCTION history_name_linked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users'
       AND EXISTS (SELECT 1 FROM user_messages WHERE user_id = OLD.id)
       OR TG_TABLE_NAME = 'packages'
       AND EXISTS (SELECT 1 FROM package_messages WHERE package_id = OLD.id) THEN
        RAISE EXCEPTION '% % is still linked to messages', TG_TABLE_NAME, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_linked AFTER DELETE OR UPDATE OF id ON users
    FOR EACH ROW EXECUTE FUNCTION history_name_linked();
CREATE TRIGGER packages_linked AFTER DELETE OR UPDATE OF id ON packages
    FOR EACH ROW EXECUTE FUNCTION history_name_linked();

-- a link's ids changed to ones that do not exist
CREATE FUNCTION history_user_link_targets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM messages WHERE id = NEW.message_id)
       OR NOT EXISTS (SELECT 1 FROM users WHERE id = NEW.user_id) THEN
        RAISE EXCEPTION 'a user link points at a message or user that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER user_messages_targets AFTER UPDATE OF message_id, user_id ON user_messages
    FOR EACH ROW EXECUTE FUNCTION history_user_link_targets();
CREATE FUNCTION history_package_link_targets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM messages WHERE id = NEW.message_id)
       OR NOT EXISTS (SELECT 1 FROM packages WHERE id = NEW.package_id) THEN
        RAISE EXCEPTION 'a package link points at a message or package that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER package_messages_targets AFTER UPDATE OF message_id, package_id
    ON package_messages FOR EACH ROW EXECUTE FUNCTION history_package_link_targets();
