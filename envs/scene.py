"""The tabletop scene, written here as MJCF: a 5-joint arm with a parallel gripper, a table, three objects of
distinct shapes whose colors are drawn from a palette at every reset, and goal regions (a bowl, a plate, and
left/right zones).

Frames: z is up, the table top is the plane z = 0, the arm's base stands at x = -0.40 facing +x. The `front`
camera is the view of a person standing across the table, facing the robot; instruction words `left`/`right` are
that person's (and the image's) left and right, which is world -y / +y.

The arm (all pitch joints about y): j1 base yaw, j2 shoulder, j3 elbow, j4 wrist pitch, j5 wrist roll. At zero the
upper arm is vertical, the forearm horizontal and the hand points down, so "pointing down at yaw psi" is reachable
across the workspace: that is the end-effector pose the controller works in (position of the `ee` site between
the fingertips, plus yaw). Arm bodies use MuJoCo's gravity compensation so that the joint position servos track
without a gravity bias. Shadows are off (`shadowsize=0`): they cost ~10x in offscreen rendering on the CPU.
"""

from __future__ import annotations

import dataclasses

# name -> RGBA; objects take distinct colors from here at every reset
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.10, 1.0),
    "green": (0.15, 0.70, 0.20, 1.0),
    "blue": (0.12, 0.30, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.20, 0.75, 1.0),
    "orange": (0.98, 0.50, 0.05, 1.0),
}


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    name: str  # body name in the MJCF, also the canonical shape word
    geom: str  # MJCF geom type
    size: tuple[float, ...]  # MJCF geom size (half sizes)
    half_height: float  # resting height of the center above the table
    grasp_width: float  # width between the fingers when grasped across the narrow side
    symmetry: float  # yaw symmetry period in radians (for choosing a grasp yaw)


OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec("cube", "box", (0.02, 0.02, 0.02), 0.02, 0.04, 3.14159265 / 2),
    ObjectSpec("cylinder", "cylinder", (0.02, 0.025), 0.025, 0.04, 0.0),
    ObjectSpec("bar", "box", (0.015, 0.035, 0.018), 0.018, 0.03, 3.14159265),
)
OBJECT_NAMES = tuple(o.name for o in OBJECTS)

TABLE_HALF = (0.45, 0.40)  # x, y half extents of the table top
BASE_POS = (-0.40, 0.0)
WORKSPACE_LOW = (-0.15, -0.30, 0.0)  # the controller keeps the ee target inside this box
WORKSPACE_HIGH = (0.22, 0.30, 0.35)
BOWL_INNER = 0.05  # inner half size of the square bowl
BOWL_WALL = 0.022  # wall height
PLATE_RADIUS = 0.05
ZONE_Y = 0.20  # |y| beyond which an object is in the left (-y) or right (+y) zone
FINGER_OPEN = 0.04  # each finger slides 0..FINGER_OPEN from the center
SHOULDER_Z = 0.22
UPPER_ARM = 0.38
FOREARM = 0.36

ARM_JOINTS = ("j1_yaw", "j2_shoulder", "j3_elbow", "j4_wrist", "j5_roll")
FINGER_JOINTS = ("finger_l", "finger_r")
HAND_GEOMS = ("palm", "finger_l_geom", "finger_r_geom")


def _object_xml(o: ObjectSpec) -> str:
    size = " ".join(f"{s:g}" for s in o.size)
    return f"""
    <body name="{o.name}" pos="0 0 {o.half_height}">
      <freejoint name="{o.name}_free"/>
      <geom name="{o.name}_geom" type="{o.geom}" size="{size}" rgba="1 1 1 1" mass="0.05" friction="1.0 0.01 0.001"
            condim="4"/>
    </body>"""


def _bowl_xml() -> str:
    r, h, t = BOWL_INNER, BOWL_WALL, 0.005
    walls = []
    for i, (x, y, sx, sy) in enumerate(
        [(r + t, 0, t, r + 2 * t), (-r - t, 0, t, r + 2 * t), (0, r + t, r, t), (0, -r - t, r, t)]
    ):
        walls.append(
            f'<geom name="bowl_wall{i}" type="box" pos="{x:g} {y:g} {h / 2:g}" size="{sx:g} {sy:g} {h / 2:g}" '
            f'rgba="0.55 0.40 0.25 1"/>'
        )
    return (
        '<body name="bowl" pos="0.1 0.1 0">'
        f'<geom name="bowl_floor" type="box" pos="0 0 0.001" size="{r:g} {r:g} 0.001" rgba="0.75 0.60 0.40 1"/>'
        + "".join(walls)
        + "</body>"
    )


def scene_xml(timestep: float = 0.005, offwidth: int = 640, offheight: int = 480) -> str:
    """The whole scene as an MJCF string."""
    objects = "".join(_object_xml(o) for o in OBJECTS)
    tx, ty = TABLE_HALF
    bx, by = BASE_POS
    return f"""
<mujoco model="multistream_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <global offwidth="{offwidth}" offheight="{offheight}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <default>
    <joint damping="2" armature="0.05"/>
    <geom friction="0.8 0.01 0.001" solref="0.01 1"/>
    <default class="arm">
      <geom rgba="0.62 0.64 0.68 1" contype="1" conaffinity="1" density="500"/>
    </default>
    <default class="finger">
      <geom type="box" rgba="0.2 0.2 0.22 1" friction="1.5 0.02 0.002" condim="4" density="800"/>
    </default>
  </default>
  <worldbody>
    <light name="top" pos="0 0 1.5" dir="0 0 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="{tx:g} {ty:g} 0.02" rgba="0.82 0.78 0.70 1"/>
    <geom name="zone_left" type="box" pos="0.02 {-(ZONE_Y + ty) / 2:g} 0.0005"
          size="0.2 {(ty - ZONE_Y) / 2:g} 0.0005" rgba="0.70 0.85 0.95 1" contype="0" conaffinity="0"/>
    <geom name="zone_right" type="box" pos="0.02 {(ZONE_Y + ty) / 2:g} 0.0005"
          size="0.2 {(ty - ZONE_Y) / 2:g} 0.0005" rgba="0.95 0.80 0.80 1" contype="0" conaffinity="0"/>
    <camera name="front" pos="0.55 0 0.45" xyaxes="0 1 0 -0.574 0 0.819" fovy="50"/>
    <body name="look" pos="-0.05 0 0.08"/>
    <camera name="overview" pos="0.45 -0.85 0.75" mode="targetbody" target="look" fovy="50"/>
    <body name="plate" pos="0.1 -0.1 0">
      <geom name="plate_geom" type="cylinder" size="{PLATE_RADIUS:g} 0.002" pos="0 0 0.002" rgba="0.95 0.95 0.95 1"/>
    </body>
    {_bowl_xml()}
    <body name="base" pos="{bx:g} {by:g} 0" childclass="arm">
      <geom name="base_geom" type="cylinder" size="0.07 0.05" pos="0 0 0.05"/>
      <body name="link1" pos="0 0 0.1" gravcomp="1">
        <joint name="j1_yaw" axis="0 0 1" range="-1.7 1.7"/>
        <geom type="cylinder" size="0.045 0.06" pos="0 0 0.06" contype="0" conaffinity="0"/>
        <body name="link2" pos="0 0 {SHOULDER_Z - 0.1:g}" gravcomp="1">
          <joint name="j2_shoulder" axis="0 1 0" range="-0.6 1.9"/>
          <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM:g}" size="0.032" contype="0" conaffinity="0"/>
          <body name="link3" pos="0 0 {UPPER_ARM:g}" gravcomp="1">
            <joint name="j3_elbow" axis="0 1 0" range="-1.2 2.6"/>
            <geom type="capsule" fromto="0 0 0 {FOREARM:g} 0 0" size="0.027" contype="0" conaffinity="0"/>
            <body name="link4" pos="{FOREARM:g} 0 0" gravcomp="1">
              <joint name="j4_wrist" axis="0 1 0" range="-2.6 2.6"/>
              <geom type="capsule" fromto="0 0 0 0 0 -0.05" size="0.022" contype="0" conaffinity="0"/>
              <body name="hand" pos="0 0 -0.06" gravcomp="1">
                <joint name="j5_roll" axis="0 0 1" range="-3.2 3.2"/>
                <site name="ft" pos="0 0 0" size="0.01" rgba="0 0 0 0"/>
                <geom name="palm" type="box" size="0.02 0.055 0.012" pos="0 0 -0.012"/>
                <site name="ee" pos="0 0 -0.075" size="0.006" rgba="1 0 0 0"/>
                <body name="finger_l" pos="0 0 -0.024" gravcomp="1">
                  <joint name="finger_l" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN:g}" damping="5"/>
                  <geom name="finger_l_geom" class="finger" size="0.012 0.006 0.033" pos="0 -0.006 -0.033"/>
                  <site name="touch_l" type="box" size="0.013 0.003 0.02" pos="0 0 -0.048" rgba="0 0 0 0"/>
                </body>
                <body name="finger_r" pos="0 0 -0.024" gravcomp="1">
                  <joint name="finger_r" type="slide" axis="0 1 0" range="0 {FINGER_OPEN:g}" damping="5"/>
                  <geom name="finger_r_geom" class="finger" size="0.012 0.006 0.033" pos="0 0.006 -0.033"/>
                  <site name="touch_r" type="box" size="0.013 0.003 0.02" pos="0 0 -0.048" rgba="0 0 0 0"/>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    {objects}
  </worldbody>
  <contact>
    <exclude body1="finger_l" body2="finger_r"/>
    <exclude body1="hand" body2="finger_l"/>
    <exclude body1="hand" body2="finger_r"/>
  </contact>
  <actuator>
    <position name="a_j1_yaw" joint="j1_yaw" kp="400" kv="40" forcerange="-80 80"/>
    <position name="a_j2_shoulder" joint="j2_shoulder" kp="600" kv="60" forcerange="-120 120"/>
    <position name="a_j3_elbow" joint="j3_elbow" kp="400" kv="40" forcerange="-80 80"/>
    <position name="a_j4_wrist" joint="j4_wrist" kp="150" kv="12" forcerange="-40 40"/>
    <position name="a_j5_roll" joint="j5_roll" kp="60" kv="5" forcerange="-20 20"/>
    <position name="a_finger_l" joint="finger_l" kp="300" kv="10" forcerange="-12 12"/>
    <position name="a_finger_r" joint="finger_r" kp="300" kv="10" forcerange="-12 12"/>
  </actuator>
  <sensor>
    <force name="wrist_force" site="ft"/>
    <torque name="wrist_torque" site="ft"/>
    <touch name="touch_l" site="touch_l"/>
    <touch name="touch_r" site="touch_r"/>
  </sensor>
</mujoco>
"""
