"""Blind spots: event selectors, trail status, gaps in delivered files; and confidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clampdown_aws.forensics.coverage import (
    confidence,
    logs_reads_of,
    selector_blind_spots,
    status_blind_spots,
)
from clampdown_aws.forensics.exfiltration import Model
from clampdown_aws.forensics.trail_reader import TrailFile, batches, delivered_at, gaps

MODEL_ARN = "arn:aws:s3:::models/llm-v3/"
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=6)
NOW = START + timedelta(days=2)


def advanced(*fields: dict) -> dict:
    return {"AdvancedEventSelectors": [{"Name": "s", "FieldSelectors": list(fields)}]}


DATA = {"Field": "eventCategory", "Equals": ["Data"]}
OBJECTS = {"Field": "resources.type", "Equals": ["AWS::S3::Object"]}


@pytest.mark.parametrize(
    ("selectors", "logged"),
    [
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "All",
                        "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}],
                    }
                ]
            },
            True,
        ),
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "ReadOnly",
                        "DataResources": [
                            {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::models/"]}
                        ],
                    }
                ]
            },
            True,
        ),
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "WriteOnly",
                        "DataResources": [
                            {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::models/"]}
                        ],
                    }
                ]
            },
            False,
        ),
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "All",
                        "DataResources": [
                            {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::datasets/"]}
                        ],
                    }
                ]
            },
            False,
        ),
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "All",
                        "DataResources": [
                            {
                                "Type": "AWS::S3::Object",
                                "Values": ["arn:aws:s3:::models/llm-v3/weights/"],
                            }
                        ],
                    }
                ]
            },
            False,
        ),
        (advanced(DATA, OBJECTS), True),
        (
            advanced(
                DATA, OBJECTS, {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::models/"]}
            ),
            True,
        ),
        (
            advanced(
                DATA, OBJECTS, {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::other/"]}
            ),
            False,
        ),
        (advanced(DATA, OBJECTS, {"Field": "readOnly", "Equals": ["false"]}), False),
        (advanced(DATA, OBJECTS, {"Field": "readOnly", "Equals": ["true"]}), True),
        (advanced(DATA, OBJECTS, {"Field": "eventName", "Equals": ["PutObject"]}), False),
        (advanced(DATA, {"Field": "resources.type", "Equals": ["AWS::Lambda::Function"]}), False),
        (advanced({"Field": "eventCategory", "Equals": ["Management"]}), False),
        ({}, False),
    ],
)
def test_which_selectors_log_object_reads_of_a_model(selectors: dict, logged: bool) -> None:
    assert logs_reads_of(selectors, MODEL_ARN) is logged


def test_selector_blind_spots_name_the_model_and_management_events() -> None:
    model = Model(name="llm-v3", bucket="models", prefix="llm-v3/")
    spots = selector_blind_spots(
        advanced(DATA, OBJECTS, {"Field": "readOnly", "Equals": ["false"]}), [model], "t"
    )
    assert [s["kind"] for s in spots] == ["data_events_off", "management_events_off"]
    assert "s3://models/llm-v3/" in spots[0]["detail"]
    assert selector_blind_spots({}, [], "t") == [
        {
            "kind": "data_events_off",
            "detail": "trail t logs no S3 data events: object reads are invisible here",
        }
    ]


def test_status_blind_spots() -> None:
    assert (
        status_blind_spots(
            {"IsLogging": True, "StartLoggingTime": START - timedelta(days=9)}, START, END, "t"
        )
        == []
    )
    late = status_blind_spots(
        {"IsLogging": True, "StartLoggingTime": START + timedelta(hours=2)}, START, END, "t"
    )
    assert [s["kind"] for s in late] == ["window_not_covered"]
    assert "from 2026-11-30T00:00:00Z to 2026-11-30T02:00:00Z" in late[0]["detail"]
    stopped = status_blind_spots(
        {
            "IsLogging": False,
            "StartLoggingTime": START - timedelta(days=9),
            "StopLoggingTime": START + timedelta(hours=5),
        },
        START,
        END,
        "t",
    )
    assert "from 2026-11-30T05:00:00Z to 2026-11-30T06:00:00Z" in stopped[0]["detail"]
    restarted = status_blind_spots(
        {
            "IsLogging": True,
            "StartLoggingTime": START + timedelta(hours=3),
            "StopLoggingTime": START + timedelta(hours=1),
        },
        START,
        END,
        "t",
    )
    assert "from 2026-11-30T01:00:00Z to 2026-11-30T03:00:00Z" in restarted[0]["detail"]
    error = status_blind_spots(
        {"IsLogging": True, "LatestDeliveryError": "AccessDenied"}, START, END, "t"
    )
    assert error == [
        {"kind": "trail_gap", "detail": "trail t reports a delivery error: AccessDenied"}
    ]


def test_confidence_levels() -> None:
    assert confidence([])[0] == "high"
    assert confidence([{"kind": "trail_gap", "detail": ""}])[0] == "medium"
    level, reason = confidence(
        [{"kind": "trail_gap", "detail": ""}, {"kind": "data_events_off", "detail": ""}]
    )
    assert level == "low" and "does not mean nothing was taken" in reason


def _file(moment: datetime, size: int = 10) -> TrailFile:
    return TrailFile(f"k{moment:%H%M}", "us-east-1", moment, size)


def test_gaps_are_whole_missing_hours_merged() -> None:
    files = [_file(START + timedelta(minutes=m)) for m in range(5, 360, 5) if not 120 <= m < 240]
    assert gaps(files, START, END, NOW) == [
        (START + timedelta(hours=2), START + timedelta(hours=4))
    ]
    assert gaps(files, START, END, START + timedelta(hours=2, minutes=10)) == []  # not settled yet
    assert gaps([], START + timedelta(minutes=30), START + timedelta(hours=2), NOW) == [
        (START + timedelta(hours=1), START + timedelta(hours=2))
    ]


def test_delivery_time_and_batches() -> None:
    key = "AWSLogs/1/CloudTrail/us-east-1/2026/11/30/1_CloudTrail_us-east-1_20261130T0105Z_AB12.json.gz"
    assert delivered_at(key) == datetime(2026, 11, 30, 1, 5, tzinfo=UTC)
    assert delivered_at("AWSLogs/1/CloudTrail/us-east-1/2026/11/30/readme.txt") is None
    files = [_file(START + timedelta(minutes=m), size=40 * 1024 * 1024) for m in range(10)]
    sizes = [len(b) for b in batches(files)]
    assert sum(sizes) == 10 and max(sizes) <= 3
