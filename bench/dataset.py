"""A programme-scale data set, written as the two CSV files the central team receives.

Shape (at the default 2,100,000 mailboxes; everything scales with the mailbox count):
- about 12,000 organisations whose sizes follow a Zipf-like law: the largest trust has
  50,000 mailboxes, the third largest exactly 20,000 (the cohort the benchmark books), a few
  hundred trusts have thousands, and thousands of GP practices and care homes have tens;
- mailboxes named as NHSmail names them: `firstname.lastname[N]@nhs.net`, display names
  `LASTNAME, Firstname (ORGANISATION NAME)`, shared, room and equipment mailboxes named after
  their organisation; surnames and first names drawn from skewed (Zipf) frequencies, so that
  prefixes such as "jam" or "smi" match thousands of mailboxes, as they do in real life;
- sizes log-normal with a mean of 1 GiB (median about 0.5 GiB, a long tail capped at 100 GiB).

Deterministic for a given seed and size.
"""

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

PROGRAMME_MAILBOXES = 2_100_000
PROGRAMME_ORGANISATIONS = 12_000
LARGEST_ORGANISATION = 50_000
COHORT = 20_000  # the third largest organisation: booked whole by the benchmark
GIB = 1024**3
MAX_MAILBOX_BYTES = 100 * GIB  # Exchange Online's limit on most plans
SIZE_SIGMA = 1.2
BYTES_PER_ITEM = 75 * 1024

REGIONS = [
    "North East and Yorkshire",
    "North West",
    "Midlands",
    "East of England",
    "London",
    "South East",
    "South West",
]
PLACES = [
    "Airedale",
    "Barnsley",
    "Bath",
    "Bedford",
    "Birmingham",
    "Blackburn",
    "Blackpool",
    "Bolton",
    "Bournemouth",
    "Bradford",
    "Brighton",
    "Bristol",
    "Burnley",
    "Bury",
    "Calderdale",
    "Cambridge",
    "Carlisle",
    "Chelmsford",
    "Cheltenham",
    "Chester",
    "Chesterfield",
    "Colchester",
    "Coventry",
    "Crawley",
    "Croydon",
    "Darlington",
    "Derby",
    "Doncaster",
    "Dorset",
    "Dudley",
    "Durham",
    "Ealing",
    "Enfield",
    "Exeter",
    "Gateshead",
    "Gloucester",
    "Grimsby",
    "Guildford",
    "Halifax",
    "Harrogate",
    "Hartlepool",
    "Hastings",
    "Hereford",
    "Huddersfield",
    "Hull",
    "Ipswich",
    "Kendal",
    "Kettering",
    "Kingston",
    "Lancaster",
    "Leeds",
    "Leicester",
    "Lewisham",
    "Lincoln",
    "Liverpool",
    "Luton",
    "Maidstone",
    "Manchester",
    "Middlesbrough",
    "Milton",
    "Newcastle",
    "Northampton",
    "Norwich",
    "Nottingham",
    "Oldham",
    "Oxford",
    "Peterborough",
    "Plymouth",
    "Poole",
    "Portsmouth",
    "Preston",
    "Reading",
    "Rochdale",
    "Rotherham",
    "Salford",
    "Salisbury",
    "Scarborough",
    "Sheffield",
    "Shrewsbury",
    "Slough",
    "Solihull",
    "Southampton",
    "Southend",
    "Southport",
    "Stafford",
    "Stockport",
    "Stoke",
    "Sunderland",
    "Swindon",
    "Taunton",
    "Telford",
    "Torbay",
    "Truro",
    "Wakefield",
    "Walsall",
    "Warrington",
    "Watford",
    "Wigan",
    "Winchester",
    "Wirral",
    "Wolverhampton",
    "Worcester",
    "Worthing",
    "Yeovil",
    "York",
]
TRUST_KINDS = [
    "NHS Foundation Trust",
    "Teaching Hospitals NHS Foundation Trust",
    "Hospitals NHS Trust",
    "Community Healthcare NHS Trust",
    "Mental Health NHS Foundation Trust",
]
STREETS = [
    "Abbey",
    "Albert",
    "Alexandra",
    "Ash",
    "Beech",
    "Bridge",
    "Castle",
    "Cedar",
    "Chapel",
    "Church",
    "Cliff",
    "Elm",
    "Field",
    "Grange",
    "Green",
    "Grove",
    "Hall",
    "High",
    "Highfield",
    "Hill",
    "Holly",
    "Kings",
    "Lake",
    "Lime",
    "Manor",
    "Market",
    "Meadow",
    "Mill",
    "Moor",
    "Oak",
    "Orchard",
    "Park",
    "Priory",
    "Queens",
    "Riverside",
    "Rose",
    "Station",
    "Victoria",
    "Willow",
    "Windmill",
]
GP_KINDS = ["Surgery", "Medical Centre", "Health Centre", "Medical Practice", "Family Practice"]
CARE_KINDS = ["Care Home", "Nursing Home", "Home Care Services", "Residential Home"]
OTHER_KINDS = ["Hospice", "Ambulance Service", "Community Interest Company", "Dental Practice"]
FIRST_NAMES = [
    "Sarah",
    "James",
    "David",
    "John",
    "Claire",
    "Emma",
    "Michael",
    "Helen",
    "Paul",
    "Laura",
    "Rachel",
    "Andrew",
    "Louise",
    "Karen",
    "Mark",
    "Susan",
    "Richard",
    "Lisa",
    "Nicola",
    "Jennifer",
    "Christopher",
    "Julie",
    "Rebecca",
    "Peter",
    "Elizabeth",
    "Amanda",
    "Daniel",
    "Joanne",
    "Emily",
    "Thomas",
    "Stephen",
    "Hannah",
    "Jane",
    "Catherine",
    "Robert",
    "Victoria",
    "Matthew",
    "Gemma",
    "Kelly",
    "Alison",
    "Anne",
    "Samantha",
    "Katie",
    "Jessica",
    "Ian",
    "Simon",
    "Sophie",
    "Gary",
    "Kate",
    "Lucy",
    "Charlotte",
    "Amy",
    "Natalie",
    "Alan",
    "Angela",
    "Caroline",
    "Deborah",
    "Jonathan",
    "Michelle",
    "Ruth",
    "Tracey",
    "Philip",
    "Jacqueline",
    "Benjamin",
    "Anthony",
    "Stephanie",
    "Kevin",
    "Martin",
    "Fiona",
    "Alexander",
    "Margaret",
    "Lauren",
    "Jodie",
    "Joanna",
    "Dawn",
    "Mohammed",
    "Ahmed",
    "Priya",
    "Anita",
    "Sunita",
    "Aisha",
    "Fatima",
    "Olumide",
    "Chinedu",
    "Grace",
    "Joseph",
    "Zoe",
    "Sian",
    "Gareth",
    "Rhys",
    "Megan",
    "Eleanor",
    "Olivia",
    "Patricia",
    "Barbara",
    "Linda",
    "Sandra",
    "Donna",
    "Lynn",
    "Carol",
    "Shirley",
    "Wendy",
    "Yvonne",
    "Beverley",
    "Hayley",
    "Leanne",
    "Stacey",
    "Danielle",
    "Adam",
    "Craig",
    "Lee",
    "Scott",
    "Wayne",
    "Dean",
    "Neil",
    "Carl",
    "Shaun",
    "Graham",
    "Keith",
    "Brian",
    "Colin",
]
SURNAMES = [
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Khan",
    "Marshall",
    "Anderson",
    "Simpson",
    "Ellis",
    "Adams",
    "Singh",
    "Begum",
    "Wilkinson",
    "Foster",
    "Chapman",
    "Powell",
    "Webb",
    "Rogers",
    "Gray",
    "Mason",
    "Ali",
    "Hunt",
    "Hussain",
    "Campbell",
    "Matthews",
    "Owen",
    "Palmer",
    "Holmes",
    "Mills",
    "Barnes",
    "Knight",
    "Lloyd",
    "Butler",
    "Russell",
    "Barker",
    "Fisher",
    "Stevens",
    "Jenkins",
    "Murray",
    "Dixon",
    "Harvey",
    "Graham",
    "Pearson",
    "Ahmed",
    "Fletcher",
    "Walsh",
    "Kaur",
    "Gibson",
    "Howard",
    "Andrews",
    "Stewart",
    "Elliott",
    "Reynolds",
    "Saunders",
    "Payne",
    "Fox",
    "Ford",
    "Pearce",
    "Day",
    "Brooks",
    "West",
    "Lawrence",
    "Cole",
    "Atkinson",
    "Bradley",
    "Spencer",
    "Gill",
    "Dawson",
    "Ball",
    "Burton",
    "Obrien",
    "Watts",
    "Rose",
    "Booth",
    "Perry",
    "Ryan",
    "Grant",
    "Wells",
    "Armstrong",
    "Francis",
    "Rees",
    "Hayes",
    "Hart",
    "Hudson",
    "Newman",
    "Barrett",
    "Webster",
    "Hunter",
    "Gregory",
    "Carr",
    "Lowe",
    "Page",
    "Marsh",
    "Riley",
    "Dunn",
    "Woods",
    "Parsons",
    "Berry",
    "Stone",
    "Reid",
    "Holland",
    "Hawkins",
    "Harding",
    "Porter",
    "Robertson",
    "Newton",
    "Oliver",
    "Reed",
    "Kennedy",
    "Williamson",
    "Bird",
    "Gardner",
    "Shah",
    "Dean",
    "Lane",
    "Cooke",
    "Bates",
    "Henderson",
    "Parry",
    "Burgess",
    "Bishop",
    "Walton",
    "Burns",
    "Nicholson",
    "Shepherd",
    "Ross",
    "Cross",
    "Long",
    "Freeman",
    "Warren",
    "Nicholls",
    "Hamilton",
    "Byrne",
    "Sutton",
    "McDonald",
    "Yates",
    "Hodgson",
    "Robson",
    "Curtis",
    "Hopkins",
    "O'Connor",
    "Harper",
    "Coleman",
    "Watkins",
    "Moss",
    "McCarthy",
    "Chambers",
    "O'Neill",
    "Griffin",
    "Sharp",
    "Hardy",
    "Wheeler",
    "Potter",
    "Osborne",
    "Johnston",
    "Gordon",
    "Doyle",
    "Wallace",
    "George",
    "Jordan",
    "Hutchinson",
    "Rahman",
    "Okafor",
    "Adeyemi",
    "Nowak",
    "Kowalski",
    "Nguyen",
    "Chen",
    "Wang",
    "Zhang",
    "Kumar",
    "Sharma",
    "Gupta",
    "Das",
    "Mensah",
    "Osei",
    "Abubakar",
    "Ibrahim",
    "Hassan",
    "Mahmood",
    "Iqbal",
    "Akhtar",
    "Chaudhry",
    "Mistry",
    "Desai",
    "Joshi",
    "Mehta",
    "Pillai",
    "Fernandes",
    "Silva",
    "Santos",
]
SHARED_FUNCTIONS = [
    "Admin",
    "Reception",
    "Pharmacy",
    "Rota",
    "Referrals",
    "Finance",
    "IT",
    "HR",
    "Outpatients",
    "Theatres",
    "Appointments",
    "Safeguarding",
    "Governance",
    "Estates",
    "Payroll",
    "Radiology",
    "Pathology",
    "Maternity",
    "Ward",
    "Discharge",
    "Bookings",
    "Complaints",
]
EQUIPMENT = ["Projector", "Pool Car", "Laptop", "Bladder Scanner", "ECG Machine"]

ORGANISATION_HEADER = ["OrganisationCode", "Name", "Type", "Region", "ParentCode"]
MAILBOX_HEADER = [
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "DisplayName",
    "RecipientTypeDetails",
    "TotalItemSizeBytes",
    "ItemCount",
    "OrganisationCode",
]
TYPE_LABELS = {
    "trust": "Trust",
    "icb": "ICB",
    "gp_practice": "GP practice",
    "social_care": "Social care",
    "other": "Other",
}


@dataclass
class Organisation:
    rank: int  # 1 is the largest
    code: str
    name: str
    type: str
    region: str
    parent: str
    mailboxes: int


@dataclass
class DataSet:
    organisations: list[Organisation]
    mailboxes: int
    organisations_csv: Path
    mailboxes_csv: Path
    csv_bytes: int

    def by_rank(self, rank: int) -> Organisation:
        return self.organisations[rank - 1]


def scaled(value: int, mailboxes: int) -> int:
    """A programme figure scaled to a smaller run (at least 1)."""
    return max(1, round(value * mailboxes / PROGRAMME_MAILBOXES))


def organisation_sizes(mailboxes: int, count: int, largest: int, cohort: int) -> list[int]:
    """Zipf-like sizes, largest first, summing exactly to `mailboxes`: size(k) = largest / k^a.

    The exponent is solved so the sum comes out right; rank 3 is then set to `cohort`.
    """
    low, high = 0.01, 3.0
    for _ in range(60):
        a = (low + high) / 2
        total = sum(largest / k**a for k in range(1, count + 1))
        low, high = (a, high) if total > mailboxes else (low, a)
    sizes = [max(1, round(largest / k**a)) for k in range(1, count + 1)]
    if count >= 3:
        sizes[2] = cohort
    # Round to the exact total, taking from or giving to the middle ranks (never the first three).
    difference = mailboxes - sum(sizes)
    k = 3
    while difference:
        i = 3 + (k % max(1, count - 3)) if count > 3 else 0
        step = 1 if difference > 0 else -1
        if sizes[i] + step >= 1:
            sizes[i] += step
            difference -= step
        k += 1
    return sizes


def _codes(rng: random.Random, count: int) -> dict[str, list[str]]:
    """ODS-like codes: R.. trusts, Q.. ICBs, A12345 GP practices, V.... care, X.... other."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def base36(i: int, width: int) -> str:
        out = ""
        for _ in range(width):
            i, digit = divmod(i, 36)
            out = alphabet[digit] + out
        return out

    return {
        "trust": [f"R{base36(i, 2)}" for i in range(36 * 36)],
        "icb": [f"Q{base36(i, 2)}" for i in range(36 * 36)],
        "gp_practice": [f"{chr(65 + i // 99_999)}{i % 99_999 + 1:05d}" for i in range(count)],
        "social_care": [f"V{base36(i, 4)}" for i in range(count)],
        "other": [f"X{base36(i, 4)}" for i in range(count)],
    }


def make_organisations(mailboxes: int, seed: int) -> list[Organisation]:
    rng = random.Random(seed)
    count = max(20, scaled(PROGRAMME_ORGANISATIONS, mailboxes))
    sizes = organisation_sizes(
        mailboxes,
        count,
        largest=scaled(LARGEST_ORGANISATION, mailboxes),
        cohort=scaled(COHORT, mailboxes),
    )
    trusts = max(3, round(count * 220 / PROGRAMME_ORGANISATIONS))
    icbs = max(1, round(count * 42 / PROGRAMME_ORGANISATIONS))
    rest = ["gp_practice"] * 55 + ["social_care"] * 33 + ["other"] * 12
    codes = _codes(rng, count)
    used = dict.fromkeys(codes, 0)
    organisations = []
    icb_codes: list[str] = []
    for rank, size in enumerate(sizes, 1):
        if rank <= trusts:
            kind = "trust"
        elif rank <= trusts + icbs:
            kind = "icb"
        else:
            kind = rng.choice(rest)
        code = codes[kind][used[kind]]
        used[kind] += 1
        place = rng.choice(PLACES)
        if kind == "trust":
            name = f"{place} {rng.choice(TRUST_KINDS)}"
        elif kind == "icb":
            name = f"NHS {place} Integrated Care Board"
        elif kind == "gp_practice":
            name = f"{rng.choice(STREETS)} {rng.choice(GP_KINDS)}, {place}"
        elif kind == "social_care":
            name = f"{rng.choice(STREETS)} {rng.choice(CARE_KINDS)}, {place}"
        else:
            name = f"{place} {rng.choice(OTHER_KINDS)}"
        organisations.append(Organisation(rank, code, name, kind, rng.choice(REGIONS), "", size))
        if kind == "icb":
            icb_codes.append(code)
    for organisation in organisations:
        if organisation.type in {"trust", "gp_practice"} and icb_codes:
            organisation.parent = rng.choice(icb_codes)
    return organisations


def _zipf_weights(count: int, exponent: float) -> list[float]:
    weights = [1 / (k**exponent) for k in range(1, count + 1)]
    total = sum(weights)
    cumulative, running = [], 0.0
    for weight in weights:
        running += weight / total
        cumulative.append(running)
    return cumulative


def write(directory: Path, *, mailboxes: int = PROGRAMME_MAILBOXES, seed: int = 2020) -> DataSet:
    """Write organisations.csv and mailboxes.csv in `directory`; return what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    organisations = make_organisations(mailboxes, seed)
    organisations_csv = directory / "organisations.csv"
    with organisations_csv.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(ORGANISATION_HEADER)
        # Parents (ICBs) first is not required by the import, but is how a real file reads.
        for org in sorted(organisations, key=lambda o: (o.type != "icb", o.rank)):
            writer.writerow([org.code, org.name, TYPE_LABELS[org.type], org.region, org.parent])

    rng = random.Random(seed + 1)
    firsts = [name.lower() for name in FIRST_NAMES]
    lasts = [name.lower().replace("'", "") for name in SURNAMES]
    first_cum = _zipf_weights(len(firsts), 0.7)
    last_cum = _zipf_weights(len(lasts), 0.9)
    first_display = FIRST_NAMES
    last_display = [name.upper() for name in SURNAMES]
    taken: dict[str, int] = {}
    mu = math.log(GIB) - SIZE_SIGMA**2 / 2
    lognormal = rng.lognormvariate
    mailboxes_csv = directory / "mailboxes.csv"
    with mailboxes_csv.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(MAILBOX_HEADER)
        for org in organisations:
            code = org.code
            prefix = code.lower()
            upn_domain = f"@{prefix}.nhs.uk"
            label = org.name.upper()
            n = org.mailboxes
            kinds = rng.choices(
                ["UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"],
                cum_weights=[0.86, 0.96, 0.99, 1.0],
                k=n,
            )
            first_picks = rng.choices(range(len(firsts)), cum_weights=first_cum, k=n)
            last_picks = rng.choices(range(len(lasts)), cum_weights=last_cum, k=n)
            rows = []
            for i in range(n):
                kind = kinds[i]
                size = min(int(lognormal(mu, SIZE_SIGMA)), MAX_MAILBOX_BYTES)
                if kind == "UserMailbox":
                    f, s = first_picks[i], last_picks[i]
                    local = f"{firsts[f]}.{lasts[s]}"
                    display = f"{last_display[s]}, {first_display[f]} ({label})"
                elif kind == "SharedMailbox":
                    function = SHARED_FUNCTIONS[i % len(SHARED_FUNCTIONS)]
                    local = f"{prefix}.{function.lower()}"
                    display = f"{function} ({label})"
                elif kind == "RoomMailbox":
                    local = f"{prefix}.room{i}"
                    display = f"Meeting Room {i} ({label})"
                    size //= 20
                else:
                    thing = EQUIPMENT[i % len(EQUIPMENT)]
                    local = f"{prefix}.{thing.lower().replace(' ', '')}{i}"
                    display = f"{thing} {i} ({label})"
                    size //= 20
                # NHSmail's rule for a name already taken: a number after it. Bases never end
                # in a digit (rooms and equipment, which do, are numbered already), so a
                # numbered name never meets a base.
                seen = taken.get(local, 0)
                taken[local] = seen + 1
                if seen:
                    local = f"{local}{seen}"
                rows.append(
                    (
                        f"{local}@nhs.net",
                        f"{local}{upn_domain}",
                        display,
                        kind,
                        size,
                        size // BYTES_PER_ITEM + 1,
                        code,
                    )
                )
            writer.writerows(rows)
    return DataSet(
        organisations=organisations,
        mailboxes=mailboxes,
        organisations_csv=organisations_csv,
        mailboxes_csv=mailboxes_csv,
        csv_bytes=mailboxes_csv.stat().st_size,
    )
