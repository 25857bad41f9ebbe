-- 0006: PostgreSQL's file of this version adds the triggers that announce
-- changes of agent presence (LISTEN/NOTIFY). A SQLite store is one
-- gateway's, with nobody to tell: nothing changes here.
SELECT 1;
