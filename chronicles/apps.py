from django.apps import AppConfig


class ChroniclesConfig(AppConfig):
    name = "chronicles"
    verbose_name = "Chronicles (game data)"
