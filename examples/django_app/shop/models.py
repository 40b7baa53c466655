from __future__ import annotations

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return str(self.name)


class Item(models.Model):
    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="items")

    def __str__(self) -> str:
        return str(self.name)
