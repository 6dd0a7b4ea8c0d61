"""The admin's product form: the same rules, and the same messages, as the API and the import."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from . import validators
from .models import Product


class RuleField(forms.Field):
    """A form field that cleans with one of the rules in validators.py (and only with it).

    Django's own DecimalField / CharField would add their own checks and
    messages ("Ensure that there are no more than 2 decimal places.") next to
    the rule's, so one mistake would read two ways.
    """

    def __init__(self, rule, **kwargs) -> None:
        self.rule = rule
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        return self.rule(value)

    def validate(self, value) -> None:
        if value is None and self.required:
            raise ValidationError(self.error_messages["required"], code="required")


class ProductForm(forms.ModelForm):
    name = RuleField(
        validators.clean_name,
        # No maxlength: browsers count UTF-16 units (an emoji is 2), the rule
        # counts characters, and a box that cuts silently stores another name.
        widget=forms.TextInput(attrs={"size": 60}),
        error_messages={"required": validators.BLANK_NAME_MESSAGE},  # an empty box is a blank name
    )
    price = RuleField(validators.clean_price, widget=forms.NumberInput(attrs={"step": "0.01", "min": "0"}))
    # Starts at 0, the quantity a product gets when the API or an import leaves it out.
    quantity = RuleField(validators.clean_quantity, initial=0, widget=forms.NumberInput(attrs={"min": "0"}))
    # The product's updated_at when the editor opened the page: a save over a
    # change made since (another editor, the API) is refused, as If-Match
    # refuses it on the API, instead of silently undoing that change.
    seen_version = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Product
        fields = ["name", "price", "quantity"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["seen_version"].initial = self.instance.updated_at.isoformat()

    def clean(self):
        data = super().clean()
        seen = data.get("seen_version")
        if self.instance.pk is not None and not seen:
            # Without the version the page was opened at, a save could undo a
            # change it never showed (an empty If-Match answers 412 on the API too).
            raise ValidationError(
                "This save does not say which version of the product it was made from. Open the "
                "product again from the list, then make your change again.",
                code="stale",
            )
        if self.instance.pk is not None:
            # Locked until the admin's transaction commits (its change view is
            # atomic), so two saves of one version cannot both pass.
            current = (
                Product.objects.select_for_update()
                .filter(pk=self.instance.pk)
                .values_list("updated_at", flat=True)
                .first()
            )
            if current is not None and current.isoformat() != seen:
                raise ValidationError(
                    "This product was changed by someone else after you opened this page (or by a "
                    "save already sent from it). Open the product again from the list to see the "
                    "change, then make yours again.",
                    code="stale",
                )
        return data
