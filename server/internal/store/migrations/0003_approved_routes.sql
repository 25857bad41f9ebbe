-- 0003: each agent's approved routes and its last advertised routes
-- (DESIGN.md §8, §10), so that a restart or another replica knows them.
--
-- Both are JSON objects {"subnets": [...], "domains": [...]} of strings as
-- the API writes them. approved_routes is what the agent may serve: set at
-- enrollment, replaced by SetApprovedRoutes. last_routes is the agent's last
-- advertisement the gateway took, as advertised (what counts is its part
-- inside approved_routes). Agents enrolled before this migration start with
-- nothing approved: an operator approves their routes with SetApprovedRoutes.
ALTER TABLE agents ADD COLUMN approved_routes TEXT NOT NULL DEFAULT '{"subnets":[],"domains":[]}';
ALTER TABLE agents ADD COLUMN last_routes TEXT NOT NULL DEFAULT '{"subnets":[],"domains":[]}';
