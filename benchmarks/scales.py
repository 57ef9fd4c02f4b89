"""The two data scales of `make bench`."""

from chronicles.testdata.generator import Options

SCALES = {
    # about 20 ledger entries per character, 3 posts per scene, 1% planted problems
    "small": Options(
        seed=7,
        chronicles=40,
        characters=10_000,
        scenes=100_000,
        posts_per_scene=3,
        ledger_entries=20,
        defect_rate=0.01,
    ),
    "large": Options(
        seed=7,
        chronicles=200,
        characters=100_000,
        scenes=1_000_000,
        posts_per_scene=3,
        ledger_entries=20,
        defect_rate=0.01,
    ),
}
