"""Fill an empty database with a realistic demo of the migration, through the real services.

    python manage.py load_demo_data [--mailboxes 20000] [--seed 2020]

Every status comes from a service or from the transfer engine, never from assigning `.status`:
waves are created, opened, booked, approved, closed and started as the central team would do
it. A wave whose plan is already past its booking deadline (the pilot, tonight's wave, a wave
starting tomorrow) is first planned in the future, booked, and then has its plan times moved:
plan times are not statuses. The pilot is run to the end by the engine against a simulator
whose clock runs a billion times faster, so the demo has a finished wave whose mailboxes have
timelines; its events are stamped with the time the demo was loaded.

On a database that already holds the demo it says so and exits 0, so running it twice is
harmless; on any other non-empty database it refuses.
"""

import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxStatus, Organisation, OrganisationType, RecipientType
from mailboxes.services import programme_count
from portal.auth import Role, grant_role, role_of
from waves import services
from waves.backends.simulator import SimulatorBackend
from waves.models import Booking, BookingStatus, Wave, WaveKind, WaveStatus
from waves.transfers import wave_advance

PASSWORD = "demo-password-1"  # noqa: S105 - printed for the demo on purpose
DEFAULT_MAILBOXES = 20_000
MIN_MAILBOXES, MAX_MAILBOXES = 200, 100_000
LONDON = ZoneInfo("Europe/London")
GB = 1024**3
MB = 1024**2
MAX_MAILBOX_BYTES = 90 * GB
OVERSIZED_IN = "RR8"  # the demo lead's trust
OVERSIZED = [130 * GB, 165 * GB, 215 * GB]  # two over the usual quota, one too large to move
SIZE_SIGMA = 1.25  # log-normal spread: most mailboxes small, a few tens of GB
SIZE_MU = math.log(GB) - SIZE_SIGMA**2 / 2  # so that the mean is 1 GB
CAPACITY = {WaveKind.WEEKNIGHT: 22_000, WaveKind.WEEKEND: 83_000}  # mailboxes, and GB
# A deadline this close counts as passed: loading takes a while and services check the clock.
DEADLINE_MARGIN = timedelta(minutes=10)
ROLE_LABEL = {None: "Django admin only", **{role: role.label for role in Role}}

TRUST = OrganisationType.TRUST
GP = OrganisationType.GP_PRACTICE
ICB = OrganisationType.ICB
CARE = OrganisationType.SOCIAL_CARE
OTHER = OrganisationType.OTHER
NEY, NW, LON = "North East and Yorkshire", "North West", "London"
MID, SE, SW = "Midlands", "South East", "South West"


@dataclass(frozen=True)
class Org:
    code: str
    name: str
    type: str
    region: str
    parent: str = ""
    weight: float = 0.0  # a trust's share of all trusts' mailboxes


ORGANISATIONS = [
    Org("QWO", "NHS West Yorkshire Integrated Care Board", ICB, NEY),
    Org("QOP", "NHS Greater Manchester Integrated Care Board", ICB, NW),
    Org("QMJ", "NHS North Central London Integrated Care Board", ICB, LON),
    Org("QHL", "NHS Birmingham and Solihull Integrated Care Board", ICB, MID),
    Org("RJ1", "Guy's and St Thomas' NHS Foundation Trust", TRUST, LON, weight=24),
    Org("RR8", "Leeds Teaching Hospitals NHS Trust", TRUST, NEY, weight=20),
    Org("R0A", "Manchester University NHS Foundation Trust", TRUST, NW, weight=19),
    Org("RRK", "University Hospitals Birmingham NHS Foundation Trust", TRUST, MID, weight=15),
    Org("RTH", "Oxford University Hospitals NHS Foundation Trust", TRUST, SE, weight=8),
    Org("RCF", "Airedale NHS Foundation Trust", TRUST, NEY, weight=6),
    Org("RAE", "Bradford Teaching Hospitals NHS Foundation Trust", TRUST, NEY, weight=4.5),
    Org("RXF", "Mid Yorkshire Teaching NHS Trust", TRUST, NEY, weight=3.5),
    Org("RWY", "Calderdale and Huddersfield NHS Foundation Trust", TRUST, NEY, weight=3),
    Org("RK9", "University Hospitals Plymouth NHS Trust", TRUST, SW, weight=2),
    Org("B83005", "Saltaire Medical Practice", GP, NEY, "QWO"),
    Org("B83011", "Manningham Health Centre", GP, NEY, "QWO"),
    Org("B83020", "Wibsey and Queensbury Medical Practice", GP, NEY, "QWO"),
    Org("B83031", "Shipley Moor Surgery", GP, NEY, "QWO"),
    Org("B82022", "Ilkley Moor Medical Practice", GP, NEY, "QWO"),
    Org("B86001", "Chapel Allerton Medical Centre", GP, NEY, "QWO"),
    Org("B86008", "Beeston Village Surgery", GP, NEY, "QWO"),
    Org("B86015", "Hyde Park Surgery", GP, NEY, "QWO"),
    Org("B86030", "Kirkstall Lane Medical Centre", GP, NEY, "QWO"),
    Org("P84005", "Didsbury Medical Centre", GP, NW, "QOP"),
    Org("P84012", "Chorlton Family Practice", GP, NW, "QOP"),
    Org("P84020", "Levenshulme Health Centre", GP, NW, "QOP"),
    Org("P84034", "Fallowfield Surgery", GP, NW, "QOP"),
    Org("P84041", "Whitworth Park Medical Practice", GP, NW, "QOP"),
    Org("F83004", "Archway Medical Centre", GP, LON, "QMJ"),
    Org("F83010", "Kentish Town Health Centre", GP, LON, "QMJ"),
    Org("F83017", "Highgate Group Practice", GP, LON, "QMJ"),
    Org("F83023", "Caversham Group Practice", GP, LON, "QMJ"),
    Org("M85002", "Moseley Medical Centre", GP, MID, "QHL"),
    Org("M85019", "Harborne Medical Practice", GP, MID, "QHL"),
    Org("M85033", "Kings Heath Surgery", GP, MID, "QHL"),
    Org("M85047", "Sparkhill Family Practice", GP, MID, "QHL"),
    Org("8JD17", "Bradford Care Homes Partnership", CARE, NEY),
    Org("8KL52", "Leeds Home Care Network", CARE, NEY),
    Org("X26", "NHS England", OTHER, LON),
    Org("T1450", "NHS Business Services Authority", OTHER, NEY),
]


def words(text: str) -> list[str]:
    return text.split()


# Mailboxes per organisation at the default 20,000, by type; trusts share what is left.
BASE_RANGE = {GP: (5, 60), ICB: (150, 450), CARE: (40, 160), OTHER: (200, 500)}

FIRST_NAMES = words("""
Oliver George Harry Jack Jacob Noah Charlie Muhammad Thomas Oscar William James Leo Alfie Henry
Joshua Freddie Archie Ethan Isaac Alexander Joseph Edward Samuel Max Daniel Arthur Lucas Logan
Olivia Amelia Isla Ava Emily Sophia Grace Mia Poppy Ella Lily Evie Isabella Sophie Ivy Freya
Harper Willow Charlotte Jessica Rosie Daisy Alice Florence Ruby Sienna Phoebe Matilda Evelyn
Sarah Rachel Helen Claire Laura Emma Rebecca Hannah Katie Natalie Priya Aisha Fatima Amir Ravi
Sanjay Anil Deepa Nisha Chloe Megan Bethany Lauren Zara Yusuf Ibrahim Hamza Omar Adam Ryan
Kieran Liam Connor Sean Siobhan Niamh Aoife Ciaran Rhys Gareth Dylan Owen Ffion Catrin Mark Paul
David Andrew Peter Susan Karen Julie Michelle Angela Chidi Ngozi Kwame Ama Tunde Wei Mei Jun
Abigail Aaliyah Amy Anna Beth Bronwen Caitlin Carys Chantelle Eleanor Elizabeth Ellie Esther Eve
Gemma Georgia Harriet Imogen Jasmine Jennifer Joanna Kate Leah Lucy Maisie Maria Martha Mary Molly
Naomi Nicola Paige Rose Samantha Scarlett Tamsin Tanya Victoria Yasmin Zainab Anjali Kavita Leila
Mariam Noor Simran Sunita Adrian Aidan Alan Ben Callum Christopher Colin Craig Darren Dominic
Elliot Euan Finley Gavin Graham Hassan Ian Imran Jamie Jason Jonathan Kevin Lewis Luke Marcus
Matthew Michael Nathan Neil Nicholas Patrick Philip Raj Richard Robert Rohan Scott Simon Stephen
Stuart Tariq Theo Toby Tyler Vikram Zachary Ade Emeka Femi Kofi Segun Hao Ming Tomasz Piotr Ana
""")
LAST_NAMES = words("""
Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans
Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper
Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris Khan Scott Watson Davis
Parker James Bennett Young Phillips Richardson Mitchell Bailey Carter Cook Singh Shaw Bell
Collins Morgan Kelly Begum Miller Cox Hussain Marshall Simpson Price Anderson Adams Wilkinson Ali
Ahmed Foster Ellis Murphy Chapman Mason Gray Richards Webb Griffiths Hunt Palmer Campbell Holmes
Mills Rogers Barnes Knight Matthews Barker Powell Stevens Kaur Fisher Butler Dixon Russell Harvey
Pearson Graham Okafor Mensah Adeyemi Nwosu Chen Wang Li Nguyen Kowalski Nowak Sharma Gupta Shah
Mistry Chowdhury Rahman Islam O'Brien O'Connor McDonald MacLeod Fraser Hamilton Lloyd-Jones
Atkinson Bradley Burton Cole Day Dawson Doyle Elliott Ferguson Fletcher Ford Gibson Gill Gordon
Grant Hayes Henderson Hudson Hunter Jenkins Johnston Kennedy Lawrence Lowe Lynch Mann Marsh
Newton Owen Payne Pierce Porter Reid Reynolds Riley Robertson Rose Ross Saunders Sutton Tucker
Walsh Watts Wells West Wheeler Whitehead Williamson Woods Armstrong Barrett Bishop Black Booth
Bowen Boyd Burke Byrne Chambers Cunningham Dunn Fox Francis Gallagher Hart Holland Howard Hussey
Jordan Kent Lamb Little Lord Nash Norris Norton O'Neill Osborne Page Parry Quinn Read Rhodes
Rowe Sharp Slater Spencer Stone Summers Thornton Todd Vaughan Wade Walters Warren Wong Yates
Akhtar Anwar Bibi Choudhury Hassan Iqbal Mahmood Malik Mirza Qureshi Raza Siddiqui Desai Joshi
Kumar Mehta Nair Pillai Reddy Thakkar Varma Appiah Asante Boateng Eze Obi Okonkwo Oyelaran
""")
SHARED_FUNCTIONS = [
    "Reception",
    "Practice Manager",
    "Prescriptions",
    "Referrals",
    "Appointments",
    "Pharmacy",
    "Outpatients",
    "Radiology Bookings",
    "Medical Secretaries",
    "Safeguarding",
    "Patient Advice and Liaison Service",
    "IT Service Desk",
    "Estates Helpdesk",
    "Clinical Governance",
    "Health Records",
    "Discharge Team",
    "Rota Coordinator",
    "Infection Prevention",
    "Invoices",
    "Workforce",
]
ROOMS = ["Boardroom", "Seminar Room", "Meeting Room", "Training Room", "Quiet Room"]
EQUIPMENT = ["Projector", "Pool Car", "Laptop Trolley", "Bladder Scanner", "Video Conference Kit"]

# The demo's own sign-ins; every other organisation gets a lead who cannot sign in.
STAFF = [
    ("central", "Priya", "Shah", Role.CENTRAL_TEAM),
    ("helpdesk", "Tom", "Hughes", Role.HELPDESK),
]
DEMO_LEADS = [
    ("lead", "Sarah", "Walker", ["RR8", "B86001"]),
    ("lead2", "David", "Okafor", ["RCF"]),
    ("lead3", "Aisha", "Rahman", ["8KL52", "B86008"]),
]
SEE = {
    Role.CENTRAL_TEAM: "every wave and booking: approve, reject, open, close, start, pause",
    Role.HELPDESK: "look up any mailbox: its status now and every change",
    None: "/admin/ (superuser; no portal role)",
}


@dataclass(frozen=True)
class Plan:
    """One booking of the demo and what becomes of it."""

    code: str
    outcome: BookingStatus
    reason: str = ""
    share: float = 1.0  # of the organisation's mailboxes: below 1, a chosen subset


A, S, R, X = (
    BookingStatus.APPROVED,
    BookingStatus.SUBMITTED,
    BookingStatus.REJECTED,
    BookingStatus.WITHDRAWN,
)
BOOKINGS = {
    "pilot": [Plan("P84005", A), Plan("F83004", A), Plan("M85002", A)],
    "running": [
        Plan("RCF", A),
        Plan("RAE", A),
        Plan("B83005", A),
        Plan("B83011", A),
        Plan("B83020", A),
        Plan("8JD17", A),
    ],
    "closed": [Plan("R0A", A), Plan("QOP", A), Plan("P84012", A), Plan("P84020", A)],
    "open1": [
        Plan("RR8", A, share=0.4),
        Plan(
            "B86001",
            R,
            "Two shared mailboxes have delegates at Leeds Teaching Hospitals, whose "
            "remaining staff move later: book the practice with them.",
        ),
        Plan("B86008", X, "Practice manager on leave that week; we will book a later wave."),
        Plan("QWO", S),
        Plan("8KL52", S),
        Plan("B86015", A),
    ],
    "open2": [
        Plan("RJ1", S),
        Plan("RRK", A),
        Plan("QMJ", A),
        Plan(
            "F83010",
            R,
            "The practice's IT supplier has a change freeze that weekend: please "
            "book a weeknight wave.",
        ),
        Plan("QHL", X, "Clashes with our laptop refresh; we will rebook."),
        Plan("M85019", S),
    ],
    "open3": [Plan("RTH", A), Plan("F83017", S), Plan("RXF", S)],
    "cancelled": [Plan("RWY", S)],
}
CANCEL_REASON = "Merged into the following weekend wave to free the endpoint for a network change."


class Command(BaseCommand):
    help = "Load demo organisations, mailboxes, users, waves and bookings into an empty database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--mailboxes",
            type=int,
            default=DEFAULT_MAILBOXES,
            help=f"how many mailboxes in all ({MIN_MAILBOXES:,} to {MAX_MAILBOXES:,}; "
            f"default {DEFAULT_MAILBOXES:,})",
        )
        parser.add_argument("--seed", type=int, default=2020, help="random seed (default 2020)")

    def handle(self, *args, mailboxes: int, seed: int, **options) -> None:
        if get_user_model().objects.filter(username="central").exists():
            self.stdout.write("Demo data already loaded.")
            self.stdout.write(sign_in_table())
            return
        if Organisation.objects.exists() or Wave.objects.exists():
            raise CommandError(
                "The database already holds organisations or waves: load_demo_data only fills "
                "an empty database."
            )
        if not MIN_MAILBOXES <= mailboxes <= MAX_MAILBOXES:
            raise CommandError(f"--mailboxes: give {MIN_MAILBOXES:,} to {MAX_MAILBOXES:,}.")

        started = time.monotonic()
        with transaction.atomic():
            DemoLoader(random.Random(seed), mailboxes).load()  # noqa: S311 - demo data
            programme_count()  # the overview has a count before the worker's first one
        seconds = time.monotonic() - started
        self.stdout.write(self.style.SUCCESS(f"Demo data loaded in {seconds:.1f} s."))
        self.stdout.write(summary())
        self.stdout.write(sign_in_table())


class DemoLoader:
    def __init__(self, rng: random.Random, total: int):
        self.rng = rng
        self.total = total
        self.now = timezone.now()
        self.orgs: dict[str, Organisation] = {}
        self.lead_of: dict[str, object] = {}
        self.last_suffix: Counter[str] = Counter()
        self.taken: set[str] = set()
        self.central = None

    def load(self) -> None:
        self.make_users()
        self.make_organisations()
        self.make_mailboxes()
        self.make_pilot()
        self.make_running_wave()
        self.make_schedule()

    # People and places

    def make_users(self) -> None:
        User = get_user_model()  # noqa: N806
        hashed = make_password(PASSWORD)  # hashed once: hashing is slow on purpose

        def user(username, first, last, **extra):
            return User.objects.create(
                username=username,
                first_name=first,
                last_name=last,
                password=hashed,
                email=f"{first}.{last}@nhs.net".lower(),
                **extra,
            )

        for username, first, last, role in STAFF:
            staff = user(username, first, last)
            grant_role(staff, role)
            if role == Role.CENTRAL_TEAM:
                self.central = staff
        user("admin", "Portal", "Administrator", is_staff=True, is_superuser=True)
        for username, first, last, codes in DEMO_LEADS:
            lead = user(username, first, last)
            grant_role(lead, Role.IT_LEAD)
            for code in codes:
                self.lead_of[code] = lead

    def make_organisations(self) -> None:
        for spec in sorted(ORGANISATIONS, key=lambda o: bool(o.parent)):  # parents first
            org = Organisation.objects.create(
                code=spec.code,
                name=spec.name,
                type=spec.type,
                region=spec.region,
                parent=self.orgs.get(spec.parent),
            )
            self.orgs[spec.code] = org
            lead = self.lead_of.get(spec.code)
            if lead is None:
                first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
                lead = get_user_model().objects.create(
                    username=f"lead.{spec.code.lower()}",
                    first_name=first,
                    last_name=last,
                    email=f"{slug(first)}.{slug(last)}.{spec.code}@nhs.net".lower(),
                    password=make_password(None),  # exists to book; cannot sign in
                )
                grant_role(lead, Role.IT_LEAD)
                self.lead_of[spec.code] = lead
            org.leads.add(lead)

    def mailbox_counts(self) -> dict[str, int]:
        """Mailboxes per organisation: skewed (a few trusts hold most), summing to the total."""
        base = {
            o.code: self.rng.randint(*BASE_RANGE[o.type]) for o in ORGANISATIONS if o.type != TRUST
        }
        weights = {
            o.code: o.weight * self.rng.uniform(0.85, 1.15)
            for o in ORGANISATIONS
            if o.type == TRUST
        }
        left = DEFAULT_MAILBOXES - sum(base.values())
        base.update({code: w * left / sum(weights.values()) for code, w in weights.items()})
        factor = self.total / DEFAULT_MAILBOXES
        counts = {code: max(2, math.floor(n * factor)) for code, n in base.items()}
        largest = max(counts, key=counts.get)
        counts[largest] += self.total - sum(counts.values())
        return counts

    def make_mailboxes(self) -> None:
        rows = []
        for code, count in self.mailbox_counts().items():
            org = self.orgs[code]
            made = [self.mailbox(org) for _ in range(count)]
            if code == OVERSIZED_IN:
                # Every large estate has a few mailboxes past Exchange Online's limits: the
                # lead's readiness then warns of them.
                for mailbox, size in zip(
                    self.rng.sample(made, len(OVERSIZED)), OVERSIZED, strict=True
                ):
                    mailbox.size_bytes = size
            rows.extend(made)
        Mailbox.objects.bulk_create(rows, batch_size=2000)

    def mailbox(self, org: Organisation) -> Mailbox:
        rng = self.rng
        draw = rng.random()
        code = org.code.lower()
        if draw < 0.08:
            kind, label = RecipientType.SHARED, rng.choice(SHARED_FUNCTIONS)
            local, n = self.unique(f"{code}.{slug(label)}")
            display = f"{org.code} {label}" + (f" {n}" if n > 1 else "")
        elif draw < 0.089:
            kind = RecipientType.ROOM if draw < 0.086 else RecipientType.EQUIPMENT
            label = rng.choice(ROOMS if kind == RecipientType.ROOM else EQUIPMENT)
            local, n = self.unique(f"{code}.{slug(label)}")
            display = f"{org.code} {label} {n}"
        else:
            kind = RecipientType.USER
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            local, _ = self.unique(f"{slug(first)}.{slug(last)}")
            display = f"{first} {last}"
        if kind in {RecipientType.ROOM, RecipientType.EQUIPMENT}:
            size = rng.randint(1, 80) * MB
        else:
            size = min(int(rng.lognormvariate(SIZE_MU, SIZE_SIGMA)), MAX_MAILBOX_BYTES)
        return Mailbox(
            address=f"{local}@nhs.net",
            upn=f"{local}@{code}.nhs.uk",
            display_name=display,
            recipient_type=kind,
            size_bytes=size,
            item_count=max(1, int(size / rng.uniform(60_000, 140_000))),
            organisation=org,
        )

    def unique(self, base: str) -> tuple[str, int]:
        """An unused address local part, `base` or else `base2`, `base3`…, and its number."""
        n = self.last_suffix[base]
        while True:
            n += 1
            local = base if n == 1 else f"{base}{n}"
            if local not in self.taken:
                self.last_suffix[base] = n
                self.taken.add(local)
                return local, n

    # Waves and bookings

    def make_pilot(self) -> None:
        """A pilot last week, run to the end by the engine on a very fast simulated clock."""
        start = at(self.now.astimezone(LONDON).date() - timedelta(days=7), 18)
        pilot = self.wave(
            "Pilot",
            WaveKind.PILOT,
            start,
            start + timedelta(hours=13),
            capacity=max(500, math.ceil(self.cohort_size(BOOKINGS["pilot"]) * 1.2)),
            bookings=BOOKINGS["pilot"],
        )
        services.wave_close(wave=pilot, actor=self.central)
        services.wave_start(wave=pilot, actor=self.central)
        fast = SimulatorBackend(**{**settings.SIMULATOR, "time_scale": 1e9})
        for _ in range(200):
            if wave_advance(pilot.pk, backend=fast).status == WaveStatus.DONE:
                return
            time.sleep(0.005)
        raise CommandError("The pilot wave did not finish on the simulator.")

    def make_running_wave(self) -> None:
        """Tonight's wave, started a few minutes ago, cutover in 15 minutes."""
        today = self.now.astimezone(LONDON).date()
        kind = WaveKind.WEEKEND if today.weekday() >= 4 else WaveKind.WEEKNIGHT
        wave = self.wave(
            wave_name(kind, today),
            kind,
            self.now - timedelta(minutes=5),
            self.now + timedelta(minutes=15),
            bookings=BOOKINGS["running"],
        )
        services.wave_close(wave=wave, actor=self.central)
        services.wave_start(wave=wave, actor=self.central)
        wave_advance(wave.pk)  # plan and submit now, so the demo opens on a wave in progress

    def make_schedule(self) -> None:
        """Waves for the next two weeks: weeknights Monday to Thursday, weekends from Friday.

        Waves past their booking deadline are closed with approved bookings (if none is, the
        first closes early), the coming week's are open with bookings in every state, later
        ones are planned, and the last planned weeknight is cancelled with its booking.
        """
        today = self.now.astimezone(LONDON).date()
        days = [today + timedelta(days=n) for n in range(1, 15)]
        days = [day for day in days if day.weekday() <= 4]
        due = [day for day in days if deadline_of(day) <= self.now + DEADLINE_MARGIN] or days[:1]
        soon = [day for day in days[len(due) :] if at(day, 18) <= self.now + timedelta(days=9)]
        later = days[len(due) + len(soon) :]

        closed_plans = BOOKINGS["closed"]
        for day in due:
            wave = self.wave(*schedule_plan(day), bookings=closed_plans)
            services.wave_close(wave=wave, actor=self.central)
            closed_plans = []

        opened = [self.wave(*schedule_plan(day)) for day in soon]
        open1 = next((w for w in opened if w.kind == WaveKind.WEEKNIGHT), opened[0])
        open2 = next((w for w in opened if w.kind == WaveKind.WEEKEND), None)
        open2 = open2 or next((w for w in opened if w != open1), open1)
        open3 = next((w for w in opened if w not in (open1, open2)), open1)
        for wave, slot in ((open1, "open1"), (open2, "open2"), (open3, "open3")):
            for plan in BOOKINGS[slot]:
                self.book(wave, plan)

        planned = []
        for day in later:
            name, kind, start, cutover = schedule_plan(day)
            planned.append(
                services.wave_create(
                    name=name,
                    kind=kind,
                    starts_at=start,
                    cutover_at=cutover,
                    booking_deadline=deadline_of(day),
                    capacity_mailboxes=CAPACITY[kind],
                    capacity_gb=CAPACITY[kind],
                    actor=self.central,
                )
            )
        cancelled = [w for w in planned if w.kind == WaveKind.WEEKNIGHT][-1]
        services.wave_open(wave=cancelled, actor=self.central)
        for plan in BOOKINGS["cancelled"]:
            self.book(cancelled, plan)
        services.wave_cancel(wave=cancelled, actor=self.central, reason=CANCEL_REASON)

    def wave(self, name, kind, starts_at, cutover_at, *, capacity=None, bookings=()) -> Wave:
        """Create a wave, open it and make its bookings.

        A wave whose booking deadline has already passed cannot be opened or booked, so it is
        planned an hour ahead first and its real plan times are set once it is booked.
        """
        capacity = capacity or CAPACITY[kind]
        deadline = starts_at - timedelta(days=2)
        early = deadline <= self.now + DEADLINE_MARGIN
        plan = {"starts_at": starts_at, "cutover_at": cutover_at, "booking_deadline": deadline}
        if early:
            now = timezone.now()
            plan = {
                "starts_at": now + timedelta(hours=2),
                "cutover_at": now + timedelta(hours=3),
                "booking_deadline": now + timedelta(hours=1),
            }
        wave = services.wave_create(
            name=name,
            kind=kind,
            capacity_mailboxes=capacity,
            capacity_gb=capacity,
            actor=self.central,
            **plan,
        )
        services.wave_open(wave=wave, actor=self.central)
        for booking in bookings:
            self.book(wave, booking)
        if early:
            Wave.objects.filter(pk=wave.pk).update(
                starts_at=starts_at, cutover_at=cutover_at, booking_deadline=deadline
            )
            wave.refresh_from_db()
        return wave

    def book(self, wave: Wave, plan: Plan) -> Booking:
        org, lead = self.orgs[plan.code], self.lead_of[plan.code]
        chosen = None
        if plan.share < 1:
            bookable = list(
                org.mailboxes.filter(status=MailboxStatus.NOT_SCHEDULED)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            chosen = bookable[: max(1, round(len(bookable) * plan.share))]
        booking = services.booking_create(
            wave=wave, organisation=org, actor=lead, mailbox_ids=chosen
        )
        if plan.outcome == BookingStatus.APPROVED:
            services.booking_approve(booking=booking, actor=self.central)
        elif plan.outcome == BookingStatus.REJECTED:
            services.booking_reject(booking=booking, actor=self.central, reason=plan.reason)
        elif plan.outcome == BookingStatus.WITHDRAWN:
            services.booking_withdraw(booking=booking, actor=lead, reason=plan.reason)
        return booking

    def cohort_size(self, plans: list[Plan]) -> int:
        return Mailbox.objects.filter(organisation__code__in=[p.code for p in plans]).count()


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=LONDON)


def schedule_plan(day: date) -> tuple[str, WaveKind, datetime, datetime]:
    """Name, kind, start and cutover of the scheduled wave starting on `day` at 18:00 UK time."""
    kind = WaveKind.WEEKEND if day.weekday() == 4 else WaveKind.WEEKNIGHT
    cutover = at(day + timedelta(days=3 if kind == WaveKind.WEEKEND else 1), 7)
    return wave_name(kind, day), kind, at(day, 18), cutover


def deadline_of(day: date) -> datetime:
    return at(day, 18) - timedelta(days=2)


def wave_name(kind: WaveKind, day: date) -> str:
    return f"{WaveKind(kind).label} {day:%a} {day.day} {day:%b %Y}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", text.lower())


def counts(queryset, field: str, labels: type[models.TextChoices]) -> str:
    rows = queryset.values_list(field).annotate(n=Count("pk")).order_by("-n", field)
    return ", ".join(f"{n:,} {labels(value).label.lower()}" for value, n in rows)


def summary() -> str:
    mailboxes = Mailbox.objects.aggregate(n=Count("pk"), size=Sum("size_bytes"))
    lines = [
        "",
        f"Organisations: {Organisation.objects.count():,} "
        f"({counts(Organisation.objects, 'type', OrganisationType)})",
        f"Mailboxes:     {mailboxes['n']:,} holding {(mailboxes['size'] or 0) / GB:,.0f} GB "
        f"({counts(Mailbox.objects, 'recipient_type', RecipientType)})",
        f"  by status:   {counts(Mailbox.objects, 'status', MailboxStatus)}",
        f"Waves:         {Wave.objects.count():,} ({counts(Wave.objects, 'status', WaveStatus)})",
        f"Bookings:      {Booking.objects.count():,} "
        f"({counts(Booking.objects, 'status', BookingStatus)})",
    ]
    running = Wave.objects.filter(status=WaveStatus.RUNNING).first()
    if running:
        cutover = running.cutover_at.astimezone(LONDON)
        lines.append(
            f"Running now:   {running.name}, cutover at {cutover:%H:%M %Z} UK time; "
            "the worker (manage.py qcluster) moves it on."
        )
    return "\n".join(lines)


def sign_in_table() -> str:
    """Who to sign in as, with the demo password, and what each of them sees."""
    order = [username for username, *_ in STAFF + DEMO_LEADS] + ["admin"]
    users = get_user_model().objects.filter(username__in=order)
    rows = [("username", "password", "role", "sees")]
    for user in sorted(users, key=lambda u: order.index(u.username)):
        role = role_of(user)
        if role == Role.IT_LEAD:
            orgs = user.led_organisations.order_by("name")
            sees = "the mailboxes and bookings of " + "; ".join(
                f"{o.name} ({o.code})" for o in orgs
            )
        else:
            sees = SEE.get(role, "")
        rows.append((user.username, PASSWORD, ROLE_LABEL[role], sees))
    widths = [max(len(row[i]) for row in rows) for i in range(3)] + [0]
    lines = ["", "Sign in at /sign-in/ (superuser: /admin/):"]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
