"""JSON shape of a user's quota (`GET /api/quota/`), read from a `QuotaStatus`."""

from rest_framework import serializers

from quota.periods import PERIODS


class RequestQuotaSerializer(serializers.Serializer):
    limit = serializers.IntegerField(source="request_limit", allow_null=True, help_text="null: unlimited")
    used = serializers.IntegerField(source="requests_used")
    reserved = serializers.IntegerField(
        source="requests_reserved", help_text="requests held by generations running now"
    )
    remaining = serializers.IntegerField(source="requests_remaining", allow_null=True)


class TokenQuotaSerializer(serializers.Serializer):
    limit = serializers.IntegerField(source="token_limit", allow_null=True, help_text="null: unlimited")
    used = serializers.IntegerField(source="tokens_used")
    remaining = serializers.IntegerField(source="tokens_remaining", allow_null=True)


class QuotaSerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=PERIODS)
    period_start = serializers.DateTimeField()
    resets_at = serializers.DateTimeField(allow_null=True, help_text="null when the period is `never`")
    requests = RequestQuotaSerializer(source="*")
    tokens = TokenQuotaSerializer(source="*")
