"""One way to write a moment on every page, the admin included: ISO-like and with the zone
(TIME_ZONE), so "18:42" never leaves a reader guessing whose 18:42 it is."""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
