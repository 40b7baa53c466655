from __future__ import annotations

from django.contrib import admin
from django.urls import path

from .shop import views

urlpatterns = [
    path("", views.index),
    path("hello/", views.hello),
    path("items/", views.item_list),
    path("items/<int:pk>/", views.item_detail),
    path("n-plus-one/", views.n_plus_one),
    path("boom/", views.boom),
    path("admin/", admin.site.urls),
]
