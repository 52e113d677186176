-- What a producer that is itself a dataflow (a materialized view writing its
-- changelog) had consumed when it wrote its latest append; committed in the
-- same transaction as that append.
ALTER TABLE producers ADD COLUMN progress TEXT;
