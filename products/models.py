from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q

from . import validators
from .querysets import ProductManager


class Product(models.Model):
    name = models.CharField(
        max_length=validators.NAME_MAX_LENGTH,
        unique=True,
        validators=[validators.validate_product_name],
        help_text="Unique; the lookup key in URLs. No '/', no control characters.",
    )
    price = models.DecimalField(
        max_digits=validators.PRICE_MAX_DIGITS,
        decimal_places=validators.PRICE_DECIMAL_PLACES,
        validators=[validators.validate_price],
    )
    quantity = models.PositiveIntegerField(
        default=0,
        validators=[validators.validate_quantity],
        help_text="Units in stock.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProductManager()

    class Meta:
        ordering = ["name"]
        # Related lookups and code that reaches for _base_manager invalidate too.
        base_manager_name = "objects"
        constraints = [
            # The database enforces the rules too, so no write path (admin,
            # import, shell, raw update) can break them.
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_non_negative"),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="product_quantity_non_negative"),
            models.CheckConstraint(
                condition=~Q(name="") & ~Q(name__contains="/"),
                name="product_name_not_blank_no_slash",
            ),
        ]
        indexes = [
            # Keyset pagination and ordering on these columns, name breaking ties.
            models.Index(fields=["price", "name"], name="product_price_name_idx"),
            models.Index(fields=["quantity", "name"], name="product_quantity_name_idx"),
            models.Index(fields=["created_at", "name"], name="product_created_name_idx"),
            models.Index(fields=["updated_at", "name"], name="product_updated_name_idx"),
            # in_stock=false (quantity = 0) in any order: a range of one of
            # these, already sorted, instead of sorting every product out of stock.
            models.Index(fields=["quantity", "price", "name"], name="product_qty_price_name_idx"),
            models.Index(fields=["quantity", "created_at", "name"], name="product_qty_created_name_idx"),
            models.Index(fields=["quantity", "updated_at", "name"], name="product_qty_updated_name_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        """Django's UPDATE of a saved instance; in autocommit, with the stored name read in its transaction.

        The cache must forget the name the row had just before this UPDATE
        (receivers.remember_stored_name). Read outside a transaction, a rename
        committed between that read and the UPDATE (which waited for the
        rename's lock: SQLite's busy handler sleeps up to 100 ms) would be
        overwritten without its name being invalidated, and a reader that
        cached the renamed row meanwhile would keep it for 60 s. Inside a
        transaction the pre_save receiver reads it under a row lock already.
        """
        if transaction.get_connection(using).in_atomic_block:
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)
        with transaction.atomic(using=using, savepoint=False):
            self._stored_name = self.stored_name(pk_val, using, lock=True)
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)

    @classmethod
    def stored_name(cls, pk, using: str, *, lock: bool) -> str | None:
        """The name row ``pk`` has in the database (None if gone); ``lock``: until the transaction ends."""
        rows = cls._base_manager.using(using).filter(pk=pk)
        if lock:
            rows = rows.select_for_update()
        return rows.values_list("name", flat=True).first()

    def unique_error_message(self, model_class, unique_check):
        # The admin form says what the API says about a taken name.
        if tuple(unique_check) == ("name",):
            return ValidationError(validators.DUPLICATE_NAME_MESSAGE, code="unique")
        return super().unique_error_message(model_class, unique_check)


class PendingInvalidation(models.Model):
    """A cache invalidation a write could not deliver; every server process applies it.

    Written in the writer's transaction (the transactional outbox), so it
    outlives the process that missed Redis; see products.outbox.
    """

    names = models.JSONField(default=list, help_text="Product names to forget.")
    retire_all = models.BooleanField(default=False, help_text="Forget every cached product.")
    # db_default: during a rolling deploy, processes of the release before
    # this field still insert rows without it.
    token_auth = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Forget every cached token authentication (products.token_cache), not products.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The appliers read the oldest rows by primary key (its index); this
        # one serves "how old is the oldest pending record" for operators.
        indexes = [models.Index(fields=["created_at"], name="pending_inval_created_idx")]

    def __str__(self) -> str:
        if self.token_auth:
            return "every cached token authentication"
        return "every product" if self.retire_all else ", ".join(self.names)


class CacheServer(models.Model):
    """The Redis server the product cache was last adopted on, and how many times that changed.

    A server this deployment left and came back to (REDIS_URL changed and
    changed back, a proxy or a split-brain Sentinel pointing at the old
    master) still holds the values of before, under its own run_id: its
    buckets count only when marked with the epoch of the latest switch
    (products.serverledger, docs/cache.md).
    """

    key = models.CharField(max_length=100, primary_key=True, help_text="The Django cache alias.")
    server = models.CharField(
        max_length=200, help_text="The server adopted last: its run_id, database number and key prefix."
    )
    epoch = models.PositiveBigIntegerField(
        default=1,
        help_text="Grows at every switch of server, never below the clock in microseconds: never reused.",
    )

    def __str__(self) -> str:
        return f"{self.server} (epoch {self.epoch})"
