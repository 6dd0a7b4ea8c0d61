from rest_framework.permissions import DjangoModelPermissionsOrAnonReadOnly


class ProductPermissions(DjangoModelPermissionsOrAnonReadOnly):
    """Anyone reads; writes need the matching Django model permission.

    The stock action is a POST but changes an existing product, so it needs
    ``change_product`` rather than ``add_product``.
    """

    def has_permission(self, request, view) -> bool:
        if getattr(view, "action", None) == "stock":
            user = request.user
            return bool(
                user
                and user.is_authenticated
                and user.has_perm(f"{view.queryset.model._meta.app_label}.change_product")
            )
        return super().has_permission(request, view)
