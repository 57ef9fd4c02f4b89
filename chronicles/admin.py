"""Admin for the game data. Lists stay usable on millions of rows: raw id widgets
instead of huge select boxes, and no exact total count on every page."""

from django.contrib import admin
from django.db.models import Count

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry


@admin.register(Chronicle)
class ChronicleAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "last_activity_at", "archived_at", "character_count"]
    list_filter = [("archived_at", admin.EmptyFieldListFilter)]
    search_fields = ["name"]
    filter_horizontal = ["storytellers"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(character_count=Count("characters"))

    @admin.display(description="characters", ordering="character_count")
    def character_count(self, obj):
        return obj.character_count


class XPEntryInline(admin.TabularInline):
    model = XPEntry
    extra = 0
    fields = ["created_at", "kind", "amount", "scene", "note"]
    raw_id_fields = ["scene"]

    # The ledger is append-only: entries can be added here, never edited or removed.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "chronicle", "status", "npc", "xp", "updated_at"]
    list_filter = ["status", "npc"]
    search_fields = ["name", "owner__username"]
    raw_id_fields = ["owner", "chronicle"]
    readonly_fields = ["created_at", "updated_at"]
    list_select_related = ["owner", "chronicle"]
    show_full_result_count = False
    inlines = [XPEntryInline]


@admin.register(Scene)
class SceneAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "chronicle",
        "date_of_scene",
        "finished",
        "xp_given",
        "last_activity_at",
        "archived_at",
    ]
    list_filter = ["finished", "xp_given", ("archived_at", admin.EmptyFieldListFilter)]
    search_fields = ["name"]
    raw_id_fields = ["chronicle", "participants"]
    list_select_related = ["chronicle"]
    show_full_result_count = False


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["id", "scene", "character", "created_at"]
    raw_id_fields = ["scene", "character"]
    list_select_related = ["scene", "character"]
    show_full_result_count = False


@admin.register(XPEntry)
class XPEntryAdmin(admin.ModelAdmin):
    list_display = ["character", "amount", "kind", "scene", "created_at", "note"]
    list_filter = ["kind"]
    raw_id_fields = ["character", "scene"]
    list_select_related = ["character"]
    show_full_result_count = False

    # Append-only: a correction is a new entry, never an edit.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
