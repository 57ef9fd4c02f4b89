"""manage.py setup_schedules [--retime]: seed the default schedules (never overwriting
edits), give each seeded schedule a crontab row of its own, say which maintenance
schedules still run in a zone other than TIME_ZONE (--retime moves them) and which
crontab times daylight saving time makes missing or doubled."""

from django.conf import settings
from django.utils import timezone

from maintenance import cli
from maintenance.crontab_rows import (
    CrontabOf,
    in_other_zones,
    maintenance_crontabs,
    retime,
    split_shared_crontabs,
)
from maintenance.dst import dst_warning
from maintenance.schedules import seed


def at(of: CrontabOf) -> str:
    """ "03:00" for a crontab at one time of day, its cron fields otherwise."""
    minute, hour = of.fields["minute"], of.fields["hour"]
    if minute.isascii() and minute.isdigit() and hour.isascii() and hour.isdigit():
        return f"{int(hour):02d}:{int(minute):02d}"
    days = (of.fields[f] for f in ("day_of_month", "month_of_year", "day_of_week"))
    return "'" + " ".join((minute, hour, *days)) + "'"


class Command(cli.OneLineErrorsCommand):
    help = (
        "Create the default maintenance schedules in django-celery-beat. Schedules that "
        "exist (by name) are left exactly as an admin edited them; a seeded schedule "
        "whose crontab row another task shares gets a copy of its own. Reports "
        "maintenance schedules in a zone other than TIME_ZONE and crontab times that "
        "daylight saving time skips or repeats."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--retime",
            action="store_true",
            help="Move the maintenance schedules that run in another zone to TIME_ZONE, "
            "at the same minute, hour and days.",
        )

    def handle(self, *args, **options):
        changed = self._seed()
        changed += self._split()
        changed += self._retime() if options["retime"] else self._report_zones()
        self._warn_dst()
        if not changed:
            self.stdout.write("Nothing changed.")

    def say(self, line: str, style=None) -> None:
        line = cli.escape(line)  # names come from the database: keep each on one line
        self.stdout.write(style(line) if style else line)

    def _seed(self) -> int:
        created = 0
        for name, new in seed():
            if new:
                self.say(f"created  {name}", self.style.SUCCESS)
                created += 1
            else:
                self.say(f"kept     {name} (already exists)")
        return created

    def _split(self) -> int:
        splits = split_shared_crontabs()
        for split in splits:
            keep = "keeps" if len(split.others) == 1 else "keep"
            self.say(
                f"split    {split.name}: has a crontab row of its own now (#{split.new_row}); "
                f"{', '.join(split.others)} {keep} #{split.old_row}",
                self.style.SUCCESS,
            )
        return len(splits)

    def _report_zones(self) -> int:
        zone = settings.TIME_ZONE
        for of in in_other_zones(zone):
            self.say(
                f"{of.name} runs at {at(of)} {of.zone or '(no zone)'}; TIME_ZONE is {zone}: "
                f"run setup_schedules --retime to move it to {at(of)} {zone}",
                self.style.WARNING,
            )
        return 0

    def _retime(self) -> int:
        zone = settings.TIME_ZONE
        moving = in_other_zones(zone)
        if not moving:
            self.say(f"Nothing to retime: every maintenance schedule runs in {zone}.")
        for of in moving:
            retime(of, zone)
            self.say(
                f"moved    {of.name} from {at(of)} {of.zone or '(no zone)'} to {at(of)} {zone}",
                self.style.SUCCESS,
            )
        return len(moving)

    def _warn_dst(self) -> None:
        now = timezone.now()
        for of in maintenance_crontabs():
            try:
                warning = dst_warning(of.cron(), now, subject=of.name)
            except (ValueError, KeyError) as error:  # fields or a zone beat cannot read
                warning = f"{of.name}: cannot check its crontab: {cli.first_line(error)}"
            if warning:
                self.say(f"warning: {warning}", self.style.WARNING)
