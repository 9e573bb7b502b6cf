"""Django's ORM with default settings through phigate: create, bulk_create, filters,
updates, transactions on a protected table, and creating, using and dropping the table of
an unprotected model (what a migration does). Run by tests/conformance.rs with PROXY_*
set. Prints one line per check, then 'N passed, N failed'; exits 1 when a check failed.
"""

import datetime
import os
import sys
import traceback

import django
from django.conf import settings

settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["PROXY_HOST"],
            "PORT": os.environ["PROXY_PORT"],
            "USER": os.environ["PROXY_USER"],
            "PASSWORD": os.environ["PROXY_PASSWORD"],
            "NAME": os.environ["PROXY_DB"],
        }
    },
    INSTALLED_APPS=[],
    USE_TZ=True,
    TIME_ZONE="Europe/Paris",
)
django.setup()

from django.db import connection, models, transaction  # noqa: E402

BORN = datetime.date(1906, 12, 9)


class Patient(models.Model):
    clinic_id = models.IntegerField()
    ssn = models.TextField(null=True)
    full_name = models.TextField(null=True)
    birth_date = models.DateField(null=True)

    class Meta:
        app_label = "conformance"
        db_table = "patients"
        managed = False


class Visit(models.Model):
    """An unprotected model whose table the check creates and drops."""

    reason = models.CharField(max_length=100)
    seen = models.DateTimeField()

    class Meta:
        app_label = "conformance"
        db_table = "django_visits"


results = []


def check(name):
    def wrap(f):
        results.append((name, f))
        return f

    return wrap


def eq(got, expected):
    if got != expected:
        raise AssertionError(f"got {got!r}, expected {expected!r}")


@check("create, filter, update, delete")
def _():
    Patient.objects.all().delete()
    p = Patient.objects.create(clinic_id=3, ssn="123-45-6789", full_name="Grace", birth_date=BORN)
    got = Patient.objects.get(ssn="123-45-6789")
    eq((got.full_name, got.birth_date), ("Grace", BORN))
    eq(Patient.objects.filter(ssn__in=["x", "123-45-6789"]).count(), 1)
    eq(Patient.objects.filter(ssn="123-45-6789").update(full_name="G."), 1)
    p.refresh_from_db()
    eq(p.full_name, "G.")
    p.delete()
    eq(Patient.objects.count(), 0)


@check("bulk_create")
def _():
    Patient.objects.all().delete()
    Patient.objects.bulk_create(
        [Patient(clinic_id=3, ssn=f"000-00-000{i}", full_name=f"P{i}", birth_date=BORN) for i in range(5)]
    )
    eq(sorted(Patient.objects.values_list("full_name", flat=True)), [f"P{i}" for i in range(5)])


@check("transactions")
def _():
    Patient.objects.all().delete()
    try:
        with transaction.atomic():
            Patient.objects.create(clinic_id=3, ssn="111-11-1111")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with transaction.atomic():
        Patient.objects.create(clinic_id=3, ssn="222-22-2222")
    eq(list(Patient.objects.values_list("ssn", flat=True)), ["222-22-2222"])


@check("get_or_create, update_or_create, save(update_fields), select_for_update")
def _():
    Patient.objects.all().delete()
    p, created = Patient.objects.get_or_create(ssn="123-45-6789", defaults={"clinic_id": 3, "full_name": "Grace"})
    eq(created, True)
    again, created = Patient.objects.get_or_create(ssn="123-45-6789", defaults={"clinic_id": 3})
    eq((again.pk, again.full_name, created), (p.pk, "Grace", False))
    _, created = Patient.objects.update_or_create(ssn="123-45-6789", defaults={"full_name": "Grace H."})
    eq(created, False)
    p.refresh_from_db()
    eq(p.full_name, "Grace H.")
    p.birth_date = BORN
    p.save(update_fields=["birth_date"])
    with transaction.atomic():
        locked = Patient.objects.select_for_update().get(ssn="123-45-6789")
        eq(locked.birth_date, BORN)


@check("bulk_update, in_bulk, exists, Q objects, exclude, isnull, only, values, slices")
def _():
    from django.db.models import Q

    Patient.objects.all().delete()
    rows = Patient.objects.bulk_create(
        [Patient(clinic_id=3, ssn=f"000-00-000{i}", full_name=f"P{i}") for i in range(6)]
    )
    for p in rows:
        p.full_name = p.full_name.lower()
    Patient.objects.bulk_update(rows, ["full_name"])
    eq(sorted(Patient.objects.values_list("full_name", flat=True)), [f"p{i}" for i in range(6)])
    by_id = Patient.objects.in_bulk([rows[0].pk, rows[1].pk])
    eq(by_id[rows[1].pk].ssn, "000-00-0001")
    eq(Patient.objects.filter(ssn="000-00-0002").exists(), True)
    either = Patient.objects.filter(Q(ssn="000-00-0003") | Q(ssn="000-00-0004"))
    eq(sorted(either.values_list("full_name", flat=True)), ["p3", "p4"])
    eq(Patient.objects.exclude(ssn="000-00-0000").count(), 5)
    eq(Patient.objects.filter(birth_date__isnull=True).count(), 6)
    one = Patient.objects.only("ssn").get(ssn="000-00-0005")
    eq(one.full_name, "p5")
    eq(list(Patient.objects.filter(ssn="000-00-0005").values("full_name", "birth_date")),
       [{"full_name": "p5", "birth_date": None}])
    page = list(Patient.objects.order_by("id")[2:4])
    eq([p.ssn for p in page], ["000-00-0002", "000-00-0003"])
    eq(Patient.objects.filter(ssn__in=["000-00-0001", "000-00-0002"]).delete()[0], 2)


@check("iterator() in a transaction (a server-side cursor), aggregate and annotate")
def _():
    from django.db.models import Count

    Patient.objects.all().delete()
    Patient.objects.bulk_create([Patient(clinic_id=3, ssn=f"100-00-000{i}", full_name=f"I{i}") for i in range(5)])
    with transaction.atomic():
        names = [p.full_name for p in Patient.objects.order_by("id").iterator(chunk_size=2)]
    eq(names, [f"I{i}" for i in range(5)])
    # outside a transaction: a cursor WITH HOLD
    eq([p.full_name for p in Patient.objects.order_by("id").iterator(chunk_size=2)], names)
    eq(Patient.objects.aggregate(n=Count("id"), ssns=Count("ssn", distinct=True), named=Count("full_name")),
       {"n": 5, "ssns": 5, "named": 5})
    grouped = Patient.objects.values("clinic_id").annotate(n=Count("id"))
    eq(list(grouped), [{"clinic_id": 3, "n": 5}])


class Visit2(models.Model):
    """An unprotected model with a foreign key to the protected one."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, db_constraint=False)
    reason = models.CharField(max_length=100)

    class Meta:
        app_label = "conformance"
        db_table = "django_patient_visits"


@check("across a foreign key: select_related, prefetch_related, filters, a subquery, upsert")
def _():
    Patient.objects.all().delete()
    with connection.schema_editor() as editor:
        editor.create_model(Visit2)
    try:
        p = Patient.objects.create(clinic_id=3, ssn="555-55-5555", full_name="Hal", birth_date=BORN)
        Visit2.objects.bulk_create([Visit2(patient=p, reason="flu"), Visit2(patient=p, reason="cough")])
        v = Visit2.objects.select_related("patient").get(reason="flu")
        eq((v.patient.full_name, v.patient.birth_date), ("Hal", BORN))
        eq(Visit2.objects.filter(patient__ssn="555-55-5555").count(), 2)
        coughing = Visit2.objects.filter(reason="cough").values("patient_id")
        eq(list(Patient.objects.filter(id__in=coughing).values_list("ssn", flat=True)), ["555-55-5555"])
        visits = Visit2.objects.prefetch_related("patient").order_by("reason")
        eq([(x.reason, x.patient.ssn) for x in visits], [("cough", "555-55-5555"), ("flu", "555-55-5555")])
        Patient.objects.bulk_create(
            [Patient(id=p.id, clinic_id=3, ssn="555-55-5555", full_name="Harold")],
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=["full_name"],
        )
        eq(Patient.objects.get(ssn="555-55-5555").full_name, "Harold")
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Visit2)


class Vitals(models.Model):
    """Encrypted columns of every other type."""

    mrn = models.BigIntegerField(null=True)
    weight = models.DecimalField(max_digits=6, decimal_places=2, null=True)
    smoker = models.BooleanField(null=True)
    seen = models.DateTimeField(null=True)
    seen_at = models.DateTimeField(null=True)
    ref = models.UUIDField(null=True)
    visits = models.IntegerField(null=True)
    beds = models.SmallIntegerField(null=True)

    class Meta:
        app_label = "conformance"
        db_table = "vitals"
        managed = False


@check("every field type on encrypted columns: create, filter by the deterministic ones, bulk_update")
def _():
    import decimal
    import uuid

    Vitals.objects.all().delete()
    at = datetime.datetime(2020, 3, 4, 5, 6, 7, 891000, tzinfo=datetime.timezone.utc)
    ref = uuid.UUID("12345678-1234-5678-1234-567812345678")
    v = Vitals.objects.create(
        mrn=9000000000123, weight=decimal.Decimal("72.50"), smoker=True, seen=at, seen_at=at,
        ref=ref, visits=12, beds=3,
    )
    got = Vitals.objects.get(mrn=9000000000123, ref=ref)
    eq(
        (got.weight, got.smoker, got.seen, got.seen_at, got.visits, got.beds),
        # `seen` is a timestamp column: Django sends an aware value (cast to timestamptz),
        # PostgreSQL keeps its UTC time, and it reads back naive, as it would directly
        (decimal.Decimal("72.50"), True, at.replace(tzinfo=None), at, 12, 3),
    )
    later = at + datetime.timedelta(hours=1)
    v.weight = decimal.Decimal("70.25")
    v.smoker = False
    v.seen = later
    Vitals.objects.bulk_update([v], ["weight", "smoker", "seen"])
    got.refresh_from_db()
    eq((got.weight, got.smoker, got.seen), (decimal.Decimal("70.25"), False, later.replace(tzinfo=None)))
    eq(Vitals.objects.filter(mrn=9000000000123).update(seen=at), 1)


@check("an unprotected model's table: create, use, drop")
def _():
    with connection.schema_editor() as editor:
        editor.create_model(Visit)
    try:
        Visit.objects.create(reason="check-up", seen=datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone.utc))
        eq(Visit.objects.filter(reason__startswith="check").count(), 1)
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Visit)


def main():
    passed = failed = 0
    for name, f in results:
        try:
            f()
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAILED {name}")
            traceback.print_exc(file=sys.stdout)
            continue
        passed += 1
        print(f"ok     {name}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
