from dimo_core.testing import DummyConditions, DummyTeacher, TeacherContract


class TestDummyTeacherContract(TeacherContract):
    def make_teacher(self):
        return DummyTeacher()

    def make_conditions(self):
        return DummyConditions()
