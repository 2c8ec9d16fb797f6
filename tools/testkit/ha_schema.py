"""Home Assistant's MQTT discovery schema, written from its documentation of each entity type
(home-assistant.io/integrations/<type>.mqtt, "Configuration variables"): the keys it marks
required, the keys and values it documents, and what a discovered entity needs to join a device
(unique_id, device.identifiers or connections). check_discovery() returns the errors, one text each.
"""

# Home Assistant MQTT documentation, "Configuration variables", required keys per entity type.
REQUIRED = {
    'alarm_control_panel': ('command_topic', 'state_topic'),
    'binary_sensor': ('state_topic',),
    'camera': ('topic',),
    'sensor': ('state_topic',),
    'button': ('command_topic',),
    'switch': ('command_topic',),
}
# Keys documented for every MQTT entity, and those of each type this firmware may use.
COMMON = {'name', 'unique_id', 'availability_topic', 'device', 'qos', 'entity_category', 'icon',
          'json_attributes_topic', 'enabled_by_default', 'object_id', 'default_entity_id',
          'payload_available', 'payload_not_available', 'availability', 'availability_mode'}
ALLOWED = {
    'alarm_control_panel': {'command_topic', 'state_topic', 'supported_features',
                            'code_arm_required', 'code_disarm_required', 'code_trigger_required',
                            'payload_arm_away', 'payload_disarm', 'payload_arm_home', 'code',
                            'retain', 'value_template', 'command_template'},
    'binary_sensor': {'state_topic', 'device_class', 'payload_on', 'payload_off', 'off_delay',
                      'value_template', 'expire_after', 'force_update'},
    'camera': {'topic', 'image_encoding'},
    'sensor': {'state_topic', 'device_class', 'unit_of_measurement', 'state_class',
               'value_template', 'expire_after', 'force_update', 'suggested_display_precision'},
    'button': {'command_topic', 'device_class', 'payload_press', 'retain'},
    'switch': {'command_topic', 'state_topic', 'device_class', 'payload_on', 'payload_off',
               'state_on', 'state_off', 'optimistic', 'retain', 'value_template'},
}
ALARM_FEATURES = {'arm_home', 'arm_away', 'arm_night', 'arm_vacation', 'arm_custom_bypass', 'trigger'}
ALARM_STATES = {'disarmed', 'armed_home', 'armed_away', 'armed_night', 'armed_vacation',
                'armed_custom_bypass', 'pending', 'triggered', 'arming', 'disarming'}
DEVICE_KEYS = {'identifiers', 'connections', 'name', 'model', 'manufacturer', 'sw_version',
               'hw_version', 'configuration_url', 'suggested_area', 'via_device', 'serial_number'}
SENSOR_CLASSES = {'signal_strength', 'data_size', 'duration', 'timestamp'}  # the ones we use
def check_discovery(component, conf):
    """The errors of one discovery payload, per Home Assistant's documentation."""
    errors = []
    for k in REQUIRED[component]:
        if k not in conf:
            errors.append('%s: required key %s missing' % (component, k))
    for k in conf:
        if k not in COMMON and k not in ALLOWED[component]:
            errors.append('%s: key %s is not documented' % (component, k))
    for k in ('unique_id', 'device'):
        if k not in conf:
            errors.append('%s: %s missing (needed for an entity of a device)' % (component, k))
    if 'availability_topic' not in conf and 'availability' not in conf:
        errors.append('%s: no availability_topic or availability' % component)
    for a in conf.get('availability', []):
        if not isinstance(a, dict) or not a.get('topic'):
            errors.append('%s: availability entries need a topic, got %r' % (component, a))
    if conf.get('availability_mode', 'latest') not in ('all', 'any', 'latest'):
        errors.append('%s: availability_mode %r' % (component, conf['availability_mode']))
    dev = conf.get('device', {})
    if not (dev.get('identifiers') or dev.get('connections')):
        errors.append('%s: device needs identifiers or connections' % component)
    for k in dev:
        if k not in DEVICE_KEYS:
            errors.append('%s: device key %s is not documented' % (component, k))
    for k, v in conf.items():
        if k.endswith('_topic') or k == 'topic':
            if not isinstance(v, str) or not v or '+' in v or '#' in v:
                errors.append('%s: %s must be a plain topic, got %r' % (component, k, v))
    if component == 'alarm_control_panel':
        feats = conf.get('supported_features', [])
        if not set(feats) <= ALARM_FEATURES:
            errors.append('alarm_control_panel: unknown supported_features %r' % feats)
    if component == 'sensor' and 'device_class' in conf and conf['device_class'] not in SENSOR_CLASSES:
        errors.append('sensor: device_class %r' % conf['device_class'])
    if conf.get('state_class') and 'unit_of_measurement' not in conf:
        errors.append('%s: state_class without unit_of_measurement' % component)
    return errors
