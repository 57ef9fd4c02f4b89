"""Plain, obviously-correct (and slow) definitions of the integrity rules, to check the
test-data generator against. They read every row in Python on purpose: they share no
code with what they check."""

from collections import defaultdict

from chronicles.models import Character, Post, Scene, XPEntry


def ledger_sums():
    sums = defaultdict(int)
    for character_id, amount in XPEntry.objects.values_list("character_id", "amount"):
        sums[character_id] += amount
    return sums


def violations():
    """Rule code -> sorted ids of the objects that break it."""
    found = defaultdict(list)
    sums = ledger_sums()
    for c in Character.objects.all():
        if c.owner_id is None:
            found["character_without_owner"].append(c.id)
        if (
            not 1 <= c.willpower <= 10
            or not 0 <= c.temporary_willpower <= c.willpower
            or (c.age is not None and not 0 <= c.age <= 5000)
        ):
            found["character_trait_out_of_range"].append(c.id)
        if c.xp != sums.get(c.id, 0):
            found["character_xp_mismatch"].append(c.id)
    newest_post = {}
    for scene_id, created in Post.objects.values_list("scene_id", "created_at"):
        if scene_id is None:
            continue
        if scene_id not in newest_post or created > newest_post[scene_id]:
            newest_post[scene_id] = created
    for s in Scene.objects.all():
        if s.chronicle_id is None:
            found["scene_without_chronicle"].append(s.id)
        if s.archived_at is not None and not s.finished:
            found["scene_archived_unfinished"].append(s.id)
        if s.id in newest_post and s.last_activity_at != newest_post[s.id]:
            found["scene_activity_stale"].append(s.id)
    found["post_without_scene"] = list(
        Post.objects.filter(scene__isnull=True).values_list("id", flat=True)
    )
    return {rule: sorted(ids) for rule, ids in found.items() if ids}
