"""Detection blocks: pre/post-processing, FPN, RPN, RoI and mask heads, NMS, and a YOLO-style detector."""
from . import fpn, nms, roi_heads, rpn, transform  # noqa: F401
from . import yolo  # noqa: F401
