"""Pages of 50; a page that is not a number is a 400, not silently page 1."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    def get_page_number(self, request, paginator):
        value = request.query_params.get(self.page_query_param, "1")
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise ValidationError(
                {"detail": f"page: {value[:20]!r} is not a page number (1, 2, ...)"}
            )
        return value
