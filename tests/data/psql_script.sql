-- A psql session exercising what interactive users and scripts do. Run both directly and
-- through phigate; the outputs must be identical.
\set ON_ERROR_STOP 0
create temp table p(id serial primary key, name text, born date, score numeric);
insert into p(name, born, score) values ('a', '2020-01-01', 1.5), ('b', null, 2);
select * from p order by id;
\copy p(name, born, score) from stdin
c	2021-02-03	3.25
d	\N	4
\.
copy (select name, born from p order by id) to stdout with (format csv, header);
begin;
update p set score = score * 2 where name = 'a' returning *;
select 1/0;
select 'not run';
rollback;
select count(*), sum(score) from p;
prepare q(int) as select name from p where id = $1;
execute q(2);
deallocate q;
\x on
select * from p where id = 1;
\x off
select 'done' as status \gset
\echo :status
do $$ begin raise notice 'a notice for psql'; end $$;
select name from p where name = :'status' or id = 4;
\d p
