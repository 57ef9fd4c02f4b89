"""Generate a realistic chronicle site's data, deterministically from a seed.

Shape: chronicles with storytellers; characters with owners, statuses, traits and an XP
ledger whose sum is their balance; scenes spread over the last two years with
participants and posts. With a defect rate above zero it plants problems for every
integrity rule and returns their ids, so tests can check that validation finds exactly
those and nothing else.

Rows are generated as tuples and written in chunks (COPY on PostgreSQL), each chunk in
its own transaction, so a million scenes take minutes and constant memory.
"""

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata import words
from chronicles.testdata.writer import RowSink, next_id, reset_sequences

# Integrity rule codes (DESIGN.md); the generator plants problems for each of them.
CHARACTER_WITHOUT_OWNER = "character_without_owner"
CHARACTER_TRAIT_OUT_OF_RANGE = "character_trait_out_of_range"
CHARACTER_XP_MISMATCH = "character_xp_mismatch"
SCENE_WITHOUT_CHRONICLE = "scene_without_chronicle"
SCENE_ARCHIVED_UNFINISHED = "scene_archived_unfinished"
SCENE_ACTIVITY_STALE = "scene_activity_stale"
POST_WITHOUT_SCENE = "post_without_scene"
RULES = (
    CHARACTER_WITHOUT_OWNER,
    CHARACTER_TRAIT_OUT_OF_RANGE,
    CHARACTER_XP_MISMATCH,
    SCENE_WITHOUT_CHRONICLE,
    SCENE_ARCHIVED_UNFINISHED,
    SCENE_ACTIVITY_STALE,
    POST_WITHOUT_SCENE,
)

DAY = timedelta(days=1)
HISTORY = 730 * DAY  # scenes spread over the last two years
CHUNK = 5000  # characters or scenes per transaction

STATUSES = ["App", "Sub", "Un", "Ret", "Dec"]
STATUS_WEIGHTS = [60, 10, 15, 10, 5]
# (kind, smallest, largest) of the XP grants; spends are drawn from the balance.
GRANTS = [("weekly", 1, 2), ("scene", 1, 3), ("story", 2, 5), ("manual", 1, 5), ("refund", 1, 3)]
GRANT_WEIGHTS = [40, 30, 15, 10, 5]


@dataclass(frozen=True)
class Options:
    seed: int = 1
    chronicles: int = 8
    characters: int = 200
    scenes: int = 1000
    posts_per_scene: float = 3.0
    ledger_entries: float = 6.0
    defect_rate: float = 0.02
    now: datetime | None = None

    def errors(self):
        """Human-readable problems with these options; empty when they are usable."""
        problems = []
        for name in ("chronicles", "characters", "scenes"):
            if getattr(self, name) < 0:
                problems.append(f"--{name} must be 0 or more")
        if self.scenes and self.chronicles < 1:
            problems.append("--chronicles must be at least 1 when there are scenes")
        if not 0 <= self.posts_per_scene <= 1000:
            problems.append("--posts-per-scene must be between 0 and 1000")
        if not 0 <= self.ledger_entries <= 1000:
            problems.append("--ledger-entries must be between 0 and 1000")
        if not 0 <= self.defect_rate <= 1:
            problems.append("--defect-rate must be between 0 and 1")
        return problems


@dataclass
class Result:
    rows: dict = field(default_factory=dict)  # table label -> rows written
    planted: dict = field(default_factory=dict)  # rule code -> sorted object ids
    unfixable: dict = field(default_factory=dict)  # rule code -> ids a fix must leave
    seconds: float = 0.0

    @property
    def total_rows(self):
        return sum(self.rows.values())


@dataclass
class _Chronicle:
    id: int
    created_at: datetime
    ends_at: datetime
    storytellers: list
    characters: list = field(default_factory=list)


class Generator:
    def __init__(self, options, progress=None):
        self.o = options
        self.rng = random.Random(options.seed)
        self.now = options.now or timezone.now().replace(microsecond=0)
        self.progress = progress or (lambda n: None)
        self.result = Result(planted={rule: [] for rule in RULES})
        self.result.unfixable = {CHARACTER_WITHOUT_OWNER: [], CHARACTER_XP_MISMATCH: []}
        user = get_user_model()
        self.users = RowSink(
            user,
            [
                "id",
                "password",
                "is_superuser",
                "username",
                "first_name",
                "last_name",
                "email",
                "is_staff",
                "is_active",
                "date_joined",
            ],
        )
        self.chronicles = RowSink(
            Chronicle, ["id", "name", "created_at", "last_activity_at", "archived_at"]
        )
        self.storytellers = RowSink(Chronicle.storytellers.through, ["chronicle_id", "user_id"])
        self.characters = RowSink(
            Character,
            [
                "id",
                "external_id",
                "name",
                "owner_id",
                "chronicle_id",
                "status",
                "npc",
                "xp",
                "willpower",
                "temporary_willpower",
                "age",
                "created_at",
                "updated_at",
            ],
        )
        self.ledger = RowSink(
            XPEntry, ["character_id", "amount", "kind", "scene_id", "created_at", "note"]
        )
        self.scenes = RowSink(
            Scene,
            [
                "id",
                "name",
                "chronicle_id",
                "date_of_scene",
                "finished",
                "xp_given",
                "created_at",
                "last_activity_at",
                "archived_at",
            ],
        )
        self.participants = RowSink(Scene.participants.through, ["scene_id", "character_id"])
        self.posts = RowSink(Post, ["id", "scene_id", "character_id", "message", "created_at"])
        self.user_model = user

    # --- helpers -------------------------------------------------------------------

    def _between(self, start, end):
        """A random moment in [start, end]."""
        return start + (end - start) * self.rng.random()

    def _planted_indices(self, population):
        """Which of `population` rows get a planted problem: rate x population, at
        least one whenever the rate is above zero."""
        if not population or self.o.defect_rate <= 0:
            return set()
        count = min(population, max(1, round(population * self.o.defect_rate)))
        return set(self.rng.sample(range(population), count))

    def _flush(self, *sinks):
        with transaction.atomic():
            for sink in sinks:
                sink.flush()

    # --- phases --------------------------------------------------------------------

    def run(self):
        started = time.perf_counter()
        self._make_people_and_chronicles()
        self._make_characters()
        self._make_scenes()
        self._make_orphan_posts()
        reset_sequences(
            [
                self.user_model,
                Chronicle,
                Chronicle.storytellers.through,
                Character,
                XPEntry,
                Scene,
                Scene.participants.through,
                Post,
            ]
        )
        for label, sink in self._sinks().items():
            self.result.rows[label] = sink.written
        for ids in (*self.result.planted.values(), *self.result.unfixable.values()):
            ids.sort()
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _sinks(self):
        return {
            "users": self.users,
            "chronicles": self.chronicles,
            "chronicle storytellers": self.storytellers,
            "characters": self.characters,
            "xp entries": self.ledger,
            "scenes": self.scenes,
            "scene participants": self.participants,
            "posts": self.posts,
        }

    def _make_people_and_chronicles(self):
        rng, now = self.rng, self.now
        first_user = next_id(self.user_model)
        storyteller_count = max(1, (self.o.chronicles * 3 + 1) // 2)
        player_count = max(1, self.o.characters // 3)
        self.storyteller_ids = list(range(first_user, first_user + storyteller_count))
        self.player_ids = list(
            range(first_user + storyteller_count, first_user + storyteller_count + player_count)
        )
        roles = [("storyteller", self.storyteller_ids), ("player", self.player_ids)]
        for role, user_ids in roles:
            for user_id in user_ids:
                username = f"{role}{user_id}"
                self.users.add(
                    (
                        user_id,
                        "!",  # an unusable password: generated users cannot log in
                        False,
                        username,
                        rng.choice(words.FIRST_NAMES),
                        rng.choice(words.LAST_NAMES),
                        f"{username}@example.invalid",
                        False,
                        True,
                        now - HISTORY * 1.2 * rng.random(),
                    )
                )

        first_chronicle = next_id(Chronicle)
        self.chronicle_list = []
        for offset in range(self.o.chronicles):
            chronicle_id = first_chronicle + offset
            created = now - timedelta(days=rng.uniform(30, 730))
            if rng.random() < 0.25:  # an ended chronicle
                ends = self._between(created + 60 * DAY, now) if created + 60 * DAY < now else now
            else:
                ends = now - timedelta(hours=rng.uniform(0, 72))
            ends = max(ends, created)
            archived = ends + 30 * DAY if ends + 30 * DAY < now else None
            storytellers = rng.sample(
                self.storyteller_ids, min(len(self.storyteller_ids), rng.randint(1, 3))
            )
            name = f"{rng.choice(words.CITIES)} {rng.choice(words.CHRONICLE_SUFFIXES)}"
            self.chronicles.add((chronicle_id, name, created, ends, archived))
            for user_id in storytellers:
                self.storytellers.add((chronicle_id, user_id))
            self.chronicle_list.append(_Chronicle(chronicle_id, created, ends, storytellers))
        # A few chronicles carry most of the play, as on a real site.
        self.chronicle_weights = []
        total = 0.0
        for _ in self.chronicle_list:
            total += rng.paretovariate(1.5)
            self.chronicle_weights.append(total)
        self._flush(self.users, self.chronicles, self.storytellers)
        self.progress(len(self.storyteller_ids) + len(self.player_ids) + len(self.chronicle_list))

    def _pick_chronicles(self, count):
        if not self.chronicle_list:
            return [None] * count
        return self.rng.choices(self.chronicle_list, cum_weights=self.chronicle_weights, k=count)

    def _make_characters(self):
        rng, now, n = self.rng, self.now, self.o.characters
        first_id = self.first_character_id = next_id(Character)
        without_owner = self._planted_indices(n)
        bad_trait = self._planted_indices(n)
        bad_xp = self._planted_indices(n)
        chronicles = self._pick_chronicles(n)
        statuses = rng.choices(STATUSES, weights=STATUS_WEIGHTS, k=n)
        planted, unfixable = self.result.planted, self.result.unfixable
        for index in range(n):
            character_id = first_id + index
            chronicle = chronicles[index] if rng.random() >= 0.05 else None
            npc = rng.random() < 0.1
            if npc:
                owner = rng.choice(chronicle.storytellers if chronicle else self.storyteller_ids)
            else:
                owner = rng.choice(self.player_ids)
            if chronicle:
                created = self._between(chronicle.created_at, chronicle.ends_at)
            else:
                created = now - HISTORY * rng.random()
            willpower = min(10, max(1, round(rng.gauss(5, 1.5))))
            temporary = rng.randint(0, willpower)
            roll = rng.random()
            age = (
                None if roll < 0.1 else rng.randint(16, 90) if roll < 0.8 else rng.randint(91, 900)
            )

            balance, last_entry = self._make_ledger(character_id, created)
            xp = balance

            if index in without_owner:
                owner = None
                if index % 3 == 0:
                    chronicle = None
                if chronicle is None:  # no chronicle, so no storyteller to give it to
                    unfixable[CHARACTER_WITHOUT_OWNER].append(character_id)
                planted[CHARACTER_WITHOUT_OWNER].append(character_id)
            if index in bad_trait:
                broken = rng.randrange(3)
                if broken == 0:
                    willpower = rng.randint(11, 15)
                elif broken == 1:
                    temporary = willpower + rng.randint(1, 3)
                else:
                    age = rng.choice([-rng.randint(1, 50), rng.randint(5001, 9000)])
                planted[CHARACTER_TRAIT_OUT_OF_RANGE].append(character_id)
            if index in bad_xp:
                if index % 4 == 0:  # a ledger that overspent: its sum is negative
                    overspend = -(balance + rng.randint(1, 10))
                    self.ledger.add((character_id, overspend, "spend", None, now, "overspent"))
                    unfixable[CHARACTER_XP_MISMATCH].append(character_id)
                else:
                    xp = balance + rng.randint(1, 20)
                planted[CHARACTER_XP_MISMATCH].append(character_id)

            if chronicle:
                chronicle.characters.append(character_id)
            self.characters.add(
                (
                    character_id,
                    uuid.UUID(int=rng.getrandbits(128), version=4),
                    f"{rng.choice(words.FIRST_NAMES)} {rng.choice(words.LAST_NAMES)}",
                    owner,
                    chronicle.id if chronicle else None,
                    statuses[index],
                    npc,
                    xp,
                    willpower,
                    temporary,
                    age,
                    created,
                    max(created, last_entry or created),
                )
            )
            if (index + 1) % CHUNK == 0:
                self._flush(self.characters, self.ledger)
                self.progress(CHUNK)
        self._flush(self.characters, self.ledger)
        self.progress(n % CHUNK)

    def _make_ledger(self, character_id, created):
        """Append a ledger that never goes below zero; return its sum and last time."""
        rng = self.rng
        count = int(rng.random() * (2 * self.o.ledger_entries + 1))
        if not count:
            return 0, None
        times = sorted(self._between(created, self.now) for _ in range(count))
        balance = 0
        for moment in times:
            if balance >= 5 and rng.random() < 0.3:
                amount, kind = -rng.randint(1, min(balance, 15)), "spend"
            else:
                kind, low, high = rng.choices(GRANTS, weights=GRANT_WEIGHTS)[0]
                amount = rng.randint(low, high)
            balance += amount
            self.ledger.add((character_id, amount, kind, None, moment, ""))
        return balance, times[-1]

    def _make_scenes(self):
        rng, now, n = self.rng, self.now, self.o.scenes
        first_id = next_id(Scene)
        self.next_post_id = next_id(Post)
        without_chronicle = self._planted_indices(n)
        archived_unfinished = self._planted_indices(n)
        stale_activity = self._planted_indices(n)
        chronicles = self._pick_chronicles(n)
        planted = self.result.planted
        most_posts = 2 * self.o.posts_per_scene + 1
        for index in range(n):
            scene_id = first_id + index
            chronicle = chronicles[index]
            created = self._between(max(chronicle.created_at, now - HISTORY), chronicle.ends_at)
            finished = rng.random() < (0.95 if now - created > 14 * DAY else 0.4)

            cast = chronicle.characters
            cast = rng.sample(cast, min(len(cast), rng.randint(1, 5))) if cast else []
            for character_id in cast:
                self.participants.add((scene_id, character_id))

            post_count = int(rng.random() * most_posts)
            if index in stale_activity and not post_count:
                post_count = 1
            newest = None
            for _ in range(post_count):
                posted = min(created + timedelta(hours=rng.uniform(0, 72)), now)
                newest = posted if newest is None or posted > newest else newest
                self.posts.add(
                    (
                        self.next_post_id,
                        scene_id,
                        rng.choice(cast) if cast else None,
                        rng.choice(words.POST_LINES),
                        posted,
                    )
                )
                self.next_post_id += 1
            last_activity = newest
            activity = last_activity or created

            archived = None
            if finished and now - activity > 180 * DAY and rng.random() < 0.6:
                archived = min(activity + timedelta(days=rng.uniform(90, 150)), now - DAY)
            chronicle_id = chronicle.id

            if index in without_chronicle:
                chronicle_id = None
                planted[SCENE_WITHOUT_CHRONICLE].append(scene_id)
            if index in archived_unfinished:
                finished = False
                archived = archived or self._between(activity, now)
                planted[SCENE_ARCHIVED_UNFINISHED].append(scene_id)
            if index in stale_activity:
                last_activity = newest - timedelta(hours=rng.uniform(1, 48))
                planted[SCENE_ACTIVITY_STALE].append(scene_id)

            date_of_scene = created.date() if rng.random() >= 0.05 else None
            xp_given = finished and rng.random() < 0.9
            name = f"{rng.choice(words.SCENE_EVENTS)} {rng.choice(words.SCENE_PLACES)}"
            self.scenes.add(
                (
                    scene_id,
                    name,
                    chronicle_id,
                    date_of_scene,
                    finished,
                    xp_given,
                    created,
                    last_activity,
                    archived,
                )
            )
            if (index + 1) % CHUNK == 0:
                self._flush(self.scenes, self.participants, self.posts)
                self.progress(CHUNK)
        self._flush(self.scenes, self.participants, self.posts)
        self.progress(n % CHUNK)

    def _make_orphan_posts(self):
        rng = self.rng
        last_character_id = self.first_character_id + self.o.characters - 1
        for _ in self._planted_indices(self.o.scenes):
            character = None
            if self.o.characters:
                character = rng.randint(self.first_character_id, last_character_id)
            posted = self.now - HISTORY * rng.random()
            self.posts.add(
                (self.next_post_id, None, character, rng.choice(words.POST_LINES), posted)
            )
            self.result.planted[POST_WITHOUT_SCENE].append(self.next_post_id)
            self.next_post_id += 1
        self._flush(self.posts)


def expected_progress_total(options):
    """The number of progress units a run reports: users, chronicles, characters, scenes."""
    storytellers = max(1, (options.chronicles * 3 + 1) // 2)
    players = max(1, options.characters // 3)
    return storytellers + players + options.chronicles + options.characters + options.scenes


def generate(options, progress=None):
    return Generator(options, progress).run()
