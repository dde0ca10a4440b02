@restore @destructive
Feature: Restoring a backup onto a unit
  A restore validates the whole backup and its fit to the connected unit before anything is written,
  then reads the unit back and compares.

  @target_multispeq
  Scenario Outline: Restore a backup onto a <target> unit through <transport>
    Given a <target> unit running <version> reached through <transport>
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When I restore the backup
    Then the restore reports every field restored
    And the unit's settings equal the backup

    Examples:
      | target    | version | transport |
      | multispeq | 1.17    | serial    |
      | multispeq | 1.17    | visa      |

  @target_multispeq
  Scenario: A backup of another unit is refused and nothing is written
    Given a multispeq unit running 1.17
    And a backup of another multispeq unit running 1.17
    When I restore that backup onto the unit
    Then the restore is refused because the device IDs differ
    And the unit's memory is unchanged

  @target_multispeq
  Scenario: Forcing a restore from another unit keeps this unit's ID
    Given a multispeq unit running 1.17
    And a backup of another multispeq unit running 1.17
    When I force the restore of that backup onto the unit
    Then the unit's settings equal the backup except the device ID

  @target_mobiusflow
  Scenario Outline: Restore a backup onto a mobiusflow node at <version>
    Given a mobiusflow unit running <version>
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When I restore the backup
    Then the restore reports every field restored
    And the unit's settings equal the backup

    Examples:
      | version |
      | 3021    |
      | 1.19.1  |

  @target_mobiusflow
  Scenario: A 1.19.1 backup migrates onto a 3021 node
    Given a mobiusflow unit running 3021
    And a backup made on a mobiusflow unit running 1.19.1
    When I restore that backup onto the unit
    Then the restore reports a migration

  @target_mobiusflow
  Scenario Outline: A <source> backup is refused by a <version> node and nothing changes
    Given a mobiusflow unit running <version>
    And a backup made on a mobiusflow unit running <source>
    When I restore that backup onto the unit
    Then the restore is refused as incompatible with "<code>"
    And the unit's memory is unchanged

    Examples:
      | version | source | code                          |
      | 1.19.1  | 3021   | backup_generation_unsupported |
      | 3004    | 3021   | backup_too_new                |
      | 1.16.4  | 1.19.1 | backup_too_new                |

  @target_neuroomnet
  Scenario Outline: Restore a restore point onto a neuroomnet server at <version>
    Given a neuroomnet unit running <version>
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When I restore the backup
    Then the unit's settings equal the backup

    Examples:
      | version |
      | 4.2.0   |
      | 3.9.4   |

  @target_neuroomnet
  Scenario: A restore point of another neuroomnet server is refused and nothing is written
    Given a neuroomnet unit running 4.2.0
    And a backup of another neuroomnet unit running 4.2.0
    When I restore that backup onto the unit
    Then the restore is refused because the device IDs differ
    And the unit's memory is unchanged

  @target_neuroomnet
  Scenario: Forcing a restore point of another neuroomnet server keeps this server's identity
    Given a neuroomnet unit running 4.2.0
    And a backup of another neuroomnet unit running 4.2.0
    When I force the restore of that backup onto the unit
    Then the unit's settings equal the backup except the device ID

  @target_planktoscope
  Scenario Outline: Restore a backup onto a planktoscope unit at <version> over <link>
    Given a planktoscope unit running <version> reached over <link>
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When I restore the backup
    Then the restore reports every field restored
    And the unit's settings equal the backup
    And the unit rebooted and its imager is healthy

    Examples:
      | version   | link |
      | v2024.0.0 | http |
      | v2.3      | ssh  |
      | v2026     | ssh  |

  @target_planktoscope @sim_only
  Scenario Outline: Lost datasets come back from the bundle on <version> over <link>
    Given a planktoscope unit running <version> reached over <link>
    And I back up the unit
    And the unit's datasets are deleted
    When I restore the backup
    Then every dataset of the backup is on the unit again and passes its integrity check
    And the restore warns "HZ-19"

    Examples:
      | version   | link |
      | v2023.9.0 | http |
      | v2026     | http |
      | v2.3      | ssh  |

  @target_planktoscope @sim_only
  Scenario: A dashboard save between the upload and the reboot is reported as clobbering
    Given a planktoscope unit running v2025.0.0/v2.6 reached over http
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And a dashboard save of the white balance happens before the reboot
    When I restore the backup
    Then the restore warns "HZ-18"

  @target_planktoscope @sim_only
  Scenario: Choosing the hardware version after a restore replaces the restored hardware.json
    Given a planktoscope unit running v2024.0.0/v2.6 reached over http
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And the hardware version 2.6 is selected on the dashboard before the reboot
    When I restore the backup
    Then the restore warns "HZ-09"
    And the restore warns "HZ-18: /home/pi/PlanktoScope/hardware.json changed"

  @target_bactobox
  Scenario: Restore a GMI onto a bactobox unit
    Given a bactobox unit running 2.6.3 reached through http
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    When I restore the backup
    Then the restore reports every field restored
    And the unit's settings equal the backup

  @target_bactobox
  Scenario: A GMI made on another bactobox is refused and nothing is written
    Given a bactobox unit running 2.6.3
    And a GMI made on another bactobox unit
    When I restore that backup onto the unit
    Then the restore is refused because the device IDs differ
    And the unit's memory is unchanged
