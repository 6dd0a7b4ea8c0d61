from rest_framework.pagination import CursorPagination


class ProductCursorPagination(CursorPagination):
    """Cursor pagination: stable under concurrent inserts and deletes."""

    ordering = "name"
    page_size_query_param = "page_size"
    max_page_size = 500
