"""The shop's views: sync and async ones, as a Django project mixes them."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import aget_object_or_404

from .models import Item

PAGES = ("/hello/", "/items/", "/items/3/", "/n-plus-one/", "/boom/", "/admin/")


def index(request: HttpRequest) -> HttpResponse:
    links = "".join(f'<li><a href="{page}">{page}</a></li>' for page in PAGES)
    return HttpResponse(
        f"<!doctype html><title>Shop</title><h1>Shop</h1><ul>{links}</ul>"
        '<p>The dashboard: <a href="/analytics/">/analytics/</a>'
        ' (sign in at <a href="/admin/login/?next=/analytics/">the admin</a> first).</p>'
    )


async def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


def item_list(request: HttpRequest) -> JsonResponse:
    items = Item.objects.select_related("category").order_by("pk")
    return JsonResponse({"items": [_item(item) for item in items]})


async def item_detail(request: HttpRequest, pk: int) -> JsonResponse:
    item = await aget_object_or_404(Item.objects.select_related("category"), pk=pk)
    return JsonResponse(_item(item))


def n_plus_one(request: HttpRequest) -> JsonResponse:
    """Each item's category read by a query of its own: the pattern query timing shows."""
    names = [f"{item.name} ({item.category.name})" for item in Item.objects.order_by("pk")]
    return JsonResponse({"items": names})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the shop's /boom/ view always fails")


def _item(item: Item) -> dict[str, object]:
    return {
        "id": item.pk,
        "name": item.name,
        "price_cents": item.price_cents,
        "category": item.category.name,
    }
