"""A ROS 2 node sketch: sensor_msgs/Image in, std_msgs/String label out (rclpy + cv_bridge).

Not runnable without a ROS 2 installation (none is available where clipedge is tested):

    ros2 run <your_package> clipedge_node --ros-args -p model:=/path/model.onnx -p topic:=/camera/image_raw
"""

from __future__ import annotations

import rclpy
from cv_bridge import CvBridge
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from clipedge.runtime import Classifier


class ClipedgeNode(Node):
    def __init__(self) -> None:
        super().__init__("clipedge")
        model = self.declare_parameter("model", "model.onnx").value
        topic = self.declare_parameter("topic", "/camera/image_raw").value
        self.classifier = Classifier(model)
        self.bridge = CvBridge()
        self.publisher = self.create_publisher(String, "~/label", 10)
        self.create_subscription(Image, topic, self.on_image, 1)  # depth 1: always classify the newest frame
        self.get_logger().info(f"classifying {topic} with {self.classifier.backend_name}")

    def on_image(self, message: Image) -> None:
        frame = self.bridge.imgmsg_to_cv2(message, desired_encoding="rgb8")
        prediction = self.classifier(frame)
        self.publisher.publish(String(data=f"{prediction.label} {prediction.score:.3f}"))


def main() -> None:
    rclpy.init()
    rclpy.spin(ClipedgeNode())


if __name__ == "__main__":
    main()
