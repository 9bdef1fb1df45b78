-- Command templates need a second administrator (sqlite; kept in step with ../postgres/0012_reset_command_approval.sql).
-- A change request of kind 'reset-command' carries the proposed template (JSON, or 'null' for
-- the default chpasswd); an approved template is sealed with the master key (the seal binds
-- the type's name and the stored JSON) and the seal is checked before every use.
ALTER TABLE change_requests ADD COLUMN reset_command TEXT;
ALTER TABLE resource_types ADD COLUMN reset_command_seal TEXT;
-- Templates saved before approvals existed are unsealed: they refuse to run until approved
-- (PUT /v1/resource-types/{name}/reset-command), rather than be trusted unseen.
