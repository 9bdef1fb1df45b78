-- Command templates per resource type (postgres). Kept identical to ../sqlite/0010_reset_commands.sql.
-- JSON {program, args, stdin} (server/src/reset/command.rs); NULL: the default, chpasswd.
ALTER TABLE resource_types ADD COLUMN reset_command TEXT;
