-- Sealed change requests (postgres; kept in step with ../sqlite/0015_change_request_seal.sql).
-- A request's content (what it changes, who asked, who must approve) is attested with the
-- master key when it is made: a database writer who edits a pending request (a template, an
-- association, a digest, the approver) gets it refused at approval, not approved. Requests
-- pending from before this migration have no seal and must be made again.
ALTER TABLE change_requests ADD COLUMN request_seal TEXT;
