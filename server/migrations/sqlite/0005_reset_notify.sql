-- Who is told when a reset job finishes (JSON array of user names; NULL: nobody).
ALTER TABLE reset_jobs ADD COLUMN notify TEXT;
