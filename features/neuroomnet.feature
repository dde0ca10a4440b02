@target_neuroomnet
Feature: NeuroomNet restore points through the server's API
  A restore uploads the ZIP as a local copy, imports it, creates a safety restore point, applies with
  confirmation and waits out the server's restart; a bad ZIP is refused before the server is touched.

  @sim_only
  Scenario: Sessions that end in the middle of a backup are renewed by logging in again
    Given a neuroomnet unit running 4.2.0
    And the server ends every session after 3 more requests
    When I back up the unit
    Then the backup verifies
    And the session fault has fired

  @sim_only @destructive
  Scenario: The restore waits out a slow restart of the server
    Given a neuroomnet unit running 4.2.0
    And the unit has a distinctive calibration
    And I back up the unit
    And the unit's settings are changed
    And the server restarts slowly
    When I restore the backup
    Then the server restarted during the restore
    And a new backup equals the first, field by field

  @destructive
  Scenario Outline: A restore-point ZIP with <damage> is refused before the server is touched
    Given a neuroomnet unit running 4.2.0
    And the unit has a distinctive calibration
    And I back up the unit
    And the restore-point ZIP has <damage>
    When I restore the edited backup onto the unit
    Then the restore is refused as bad input that mentions "<text>"
    And the unit's memory is unchanged

    Examples:
      | damage                                | text                        |
      | an entry whose path escapes the folder | unsafe_path                 |
      | a corrupted byte in config.sqlite     | CRC-32                      |
      | another target's content              | restorepoint.json           |
      | a live database as its snapshot       | live server database        |
      | a WAL file beside its snapshot        | snapshot_not_self_contained |
      | an entry that inflates like a bomb    | zip bomb                    |

  @destructive
  Scenario: A restore point from a newer NeuroomNet is refused and nothing changes
    Given a neuroomnet unit running 4.2.0
    And a backup of a neuroomnet server running 5.0.0 with the same ID
    When I restore that backup onto the unit
    Then the restore is refused because the server is older than the restore point
    And the unit's memory is unchanged

  @destructive
  Scenario: A restore point from 3.9.4 is migrated onto 5.0.0 only through a 4.x server
    Given a neuroomnet unit running 5.0.0
    And a backup of a neuroomnet server running 3.9.4 with the same ID
    When I restore that backup onto the unit
    Then the restore is refused because the restore point is too old
    And the unit's memory is unchanged
