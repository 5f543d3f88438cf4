-- The e-mail address of the revision's committer, as the scm plugin reports it.
ALTER TABLE builds ADD COLUMN revision_email TEXT;
