"""The OV2640 frame sizes, in the driver's order: CameraWebServer's `framesize` is an index here."""

FRAMESIZES = ('96X96', 'QQVGA', 'QCIF', 'HQVGA', '240X240', 'QVGA', 'CIF', 'HVGA', 'VGA', 'SVGA',
              'XGA', 'HD', 'SXGA', 'UXGA')
