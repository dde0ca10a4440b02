@backup
Feature: Backing up a unit
  A backup is filed under the unit's ID, carries a manifest and passes verification,
  whichever link reaches the unit.

  @target_multispeq
  Scenario Outline: Back up a <target> unit at <version> through <transport>
    Given a <target> unit running <version> reached through <transport>
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration

    Examples:
      | target    | version | transport |
      | multispeq | 1.17    | serial    |
      | multispeq | 1.17    | visa      |
      | multispeq | 1.15    | serial    |
      | multispeq | 1.11    | serial    |
      | multispeq | 1.10    | serial    |
      | multispeq | 1.06    | serial    |
      | multispeq | 1.05    | serial    |

  @target_multispeq
  Scenario: A blank unit can still be backed up
    Given a blank multispeq unit running 1.17
    When I back up the unit
    Then the backup verifies
    And the backup is flagged "device ID is unset"
