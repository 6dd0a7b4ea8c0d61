"""manage.py seed_products N [--seed S]: add deterministic demo products."""

from __future__ import annotations

from django.core.management.base import CommandError

from products.services.demo import seed_products
from products.services.importing import IMPORT_BATCH_SIZE

from ._common import DataCommand, HeldInterrupt, Progress


class Command(DataCommand):
    help = (
        "Create N demo products, the same ones for the same --seed (upserted by name, "
        "so running it twice changes nothing)."
    )
    interrupted = "Interrupted: no demo product was written (one transaction, rolled back)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("count", type=int, metavar="N", help="how many demo products")
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            metavar="S",
            help="random seed, 0 or more: the same seed gives the same products (default 0)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=IMPORT_BATCH_SIZE,
            metavar="N",
            help=f"rows written per statement (default {IMPORT_BATCH_SIZE})",
        )

    def handle(self, *args, count: int, seed: int, batch_size: int, **options) -> None:
        if count < 0:
            raise CommandError("N must be 0 or more")
        if seed < 0:  # Python seeds by the absolute value: -1 would give the products of 1
            raise CommandError("--seed must be 0 or more")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        held = HeldInterrupt()
        with Progress(self.stderr, total=count) as progress:
            result = seed_products(
                count=count, seed=seed, batch_size=batch_size, on_progress=progress.update, commit_guard=held
            )
        self.output_lost = "the demo products are written"
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {count} demo product(s) (seed {seed}): created {result.created}, "
                f"updated {result.updated}, unchanged {result.unchanged}."
            )
        )
        held.exit_if_caught(
            self.stderr,
            self.style.WARNING(
                "Interrupted during the commit, which finished first: the products above are written."
            ),
        )
