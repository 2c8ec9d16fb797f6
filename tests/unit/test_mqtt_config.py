"""The mqtt section of config.json: bad topics and ports are refused naming the key."""
from firmware.config import schema


def test_mqtt_section_errors_name_the_key():
    assert schema.validate({'mqtt': {'host': 'broker', 'topic': 'cams/#'}}) == [
        'config: mqtt.topic: must not contain "+", "#" or end with "/"']
    assert schema.validate({'mqtt': {'discovery_prefix': 'home/assistant'}}) == [
        'config: mqtt.discovery_prefix: must be one topic level (no "/", "+", "#")']
    assert schema.validate({'mqtt': {'port': 0}}) == ['config: mqtt.port: must be 1..65535, got 0']
    assert schema.validate({'mqtt': {'allow_destructive': 1}}) == [
        'config: mqtt.allow_destructive: must be a bool, got 1']


def test_mqtt_is_off_by_default():
    cfg = schema.parse('{}')
    assert cfg.mqtt.host == '' and cfg.mqtt.allow_destructive is False
