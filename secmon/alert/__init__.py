"""Alert emails: route, render (Jinja2, vi/en), queue in the outbox, deliver exactly once over SMTP.

route.py who gets an alert; render.py + templates/ the email; safe.py log content made safe for
headers and terminals; outbox.py the documents and `enqueue`; dispatch.py `deliver_pending` (claim,
send, record); overflow.py the hourly cap; daily.py the daily digest; message.py MIME; send.py SMTP;
manage.py `secmon alerts outbox | retry`; sample.py the test email.
"""
