"""manage.py create_test_data: realistic, deterministic game data at any scale."""

import argparse
import sys

from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from chronicles.testdata.generator import Options, expected_progress_total, generate
from maintenance import cli


def _moment(value):
    try:
        parsed = parse_datetime(value)
    except ValueError:  # a well-formed but impossible date, e.g. month 13
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"expected an ISO date-time with a time zone: {value!r}")
    return parsed


class Command(cli.OneLineErrorsCommand):
    help = (
        "Generate realistic game data (chronicles, characters, XP ledgers, scenes, posts), "
        "deterministic for a --seed, with planted integrity problems at --defect-rate."
    )

    def add_arguments(self, parser):
        defaults = Options()
        parser.add_argument(
            "--seed", type=cli.ascii_int, default=defaults.seed, help="Random seed."
        )
        parser.add_argument("--chronicles", type=cli.ascii_int, default=defaults.chronicles)
        parser.add_argument("--characters", type=cli.ascii_int, default=defaults.characters)
        parser.add_argument("--scenes", type=cli.ascii_int, default=defaults.scenes)
        parser.add_argument(
            "--posts-per-scene",
            type=cli.ascii_float,
            default=defaults.posts_per_scene,
            help="Average number of posts per scene.",
        )
        parser.add_argument(
            "--ledger-entries",
            type=cli.ascii_float,
            default=defaults.ledger_entries,
            help="Average number of XP ledger entries per character.",
        )
        parser.add_argument(
            "--defect-rate",
            type=cli.ascii_float,
            default=defaults.defect_rate,
            help="Share of rows given a planted integrity problem, per rule (0 = clean data).",
        )
        parser.add_argument(
            "--now",
            type=_moment,
            help="Pretend it is this moment (ISO, with zone): same seed and --now, same data.",
        )

    def handle(self, *args, **options):
        generator_options = Options(
            seed=options["seed"],
            chronicles=options["chronicles"],
            characters=options["characters"],
            scenes=options["scenes"],
            posts_per_scene=options["posts_per_scene"],
            ledger_entries=options["ledger_entries"],
            defect_rate=options["defect_rate"],
            now=options["now"],
        )
        problems = generator_options.errors()
        if problems:
            raise cli.usage_error("; ".join(problems))

        show_bar = cli.is_terminal(sys.stderr) and options["verbosity"] > 0
        with tqdm(
            total=expected_progress_total(generator_options),
            unit=" objects",
            disable=not show_bar,
            file=sys.stderr,
        ) as bar:
            result = generate(generator_options, progress=bar.update)
        self._report(result, options["verbosity"])

    def _report(self, result, verbosity):
        if verbosity == 0:
            return
        rate = result.total_rows / result.seconds if result.seconds else 0
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {result.total_rows:,} rows in {result.seconds:.1f}s ({rate:,.0f} rows/s)."
            )
        )
        for label, count in result.rows.items():
            self.stdout.write(f"  {label:<24}{count:>12,}")
        planted = {rule: ids for rule, ids in result.planted.items() if ids}
        if not planted:
            self.stdout.write(self.style.NOTICE("No integrity problems planted (clean data)."))
            return
        self.stdout.write(self.style.WARNING("Planted integrity problems:"))
        for rule, ids in planted.items():
            unfixable = len(result.unfixable.get(rule, []))
            note = f"  ({unfixable} cannot be fixed)" if unfixable else ""
            self.stdout.write(f"  {rule:<32}{len(ids):>8,}{note}")
            if verbosity >= 2:
                sample = ", ".join(str(i) for i in ids[:20])
                self.stdout.write(f"    ids: {sample}{' ...' if len(ids) > 20 else ''}")
