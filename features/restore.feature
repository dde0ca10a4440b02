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
