-- Command templates per resource type (sqlite). Kept identical to ../postgres/0010_reset_commands.sql.
-- JSON {program, args, stdin} (server/src/reset/command.rs); NULL: the default, chpasswd.
ALTER TABLE resource_types ADD COLUMN reset_command TEXT;
