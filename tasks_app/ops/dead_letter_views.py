"""The admin's dead-letter pages at /admin/dead-letters/: staff only (wrapped in admin.site.admin_view,
which also checks CSRF, in taskhub/urls.py), linked from the admin index and the dashboard. Reads are
in tasks_app.ops.dead_letter_selectors; discarding is tasks_app.tasks.dead_letters."""

from __future__ import annotations

import redis
from django.contrib import admin, messages
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from tasks_app.ops import dead_letter_selectors as sel
from tasks_app.tasks import dead_letters


def dead_letter_list(request: HttpRequest) -> TemplateResponse:
    page = sel.dead_letter_page(after=request.GET.get("after") or None)
    context = {**admin.site.each_context(request), "title": "Dead letters", "page": page}
    return TemplateResponse(request, "taskhub/dead_letters.html", context)


def dead_letter_detail(request: HttpRequest, dead_id: str) -> TemplateResponse:
    letter, error = sel.dead_letter_detail(dead_id)
    if letter is None and not error:
        raise Http404("No such dead letter: discarded already?")
    context = {**admin.site.each_context(request), "title": f"Dead letter {dead_id}", "letter": letter, "error": error}
    return TemplateResponse(request, "taskhub/dead_letter.html", context)


@require_POST
def dead_letter_discard(request: HttpRequest) -> HttpResponseRedirect:
    """`id` (repeatable): those dead letters. `all` with `upto`: every one up to the newest the page
    showed, so one that arrived after the operator looked is kept."""
    back = redirect("taskhub-dead-letters")
    try:
        if request.POST.get("all"):
            upto = request.POST.get("upto", "")
            if not dead_letters.is_id(upto):
                messages.error(request, "Nothing discarded: the form did not say up to which dead letter.")
                return back
            n = dead_letters.discard_all(upto=upto)
        else:
            n = dead_letters.discard(request.POST.getlist("id"))
    except (redis.RedisError, OSError) as exc:
        messages.error(request, f"Nothing discarded: Redis did not answer ({exc}).")
        return back
    if n:
        messages.success(request, f"Discarded {n} dead letter{'' if n == 1 else 's'}.")
    else:
        messages.warning(request, "Nothing discarded: no such dead letter (discarded already?).")
    return back
